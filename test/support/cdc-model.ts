/**
 * An in-memory model of SQL Server change data capture: source tables, capture instances with
 * change tables, cdc.lsn_time_mapping, the capture job (SQL Server Agent), the cleanup job,
 * extended properties, application locks owned by sessions. dstream reaches it only through the
 * TDS test server (tds/server.ts) and its T-SQL front (tds/cdc-backend.ts); tests drive it directly
 * to make things happen on the server side (commit, run the capture job, clean up, drop connections).
 *
 * It follows the documented behaviour, including the errors: cdc.fn_cdc_get_all_changes_<instance>
 * fails (error 313) when @from is below the instance's min LSN, @to above the max LSN or @from
 * past @to; sys.fn_cdc_get_min_lsn returns 0x00... for an unknown instance; an update is two rows
 * with the same seqval (operation 3 before, 4 after); max LSN moves only when the capture job runs.
 * Column values are stored as SQL Server would return them for the column's type; exact numbers
 * (bigint, decimal) and dates of captured tables as their text.
 *
 * Awkward behaviours of a real server, each off until a test turns it on: capture lag (the capture
 * job runs on its own schedule, so max LSN lies behind a new instance's start_lsn), a NULL
 * start_lsn until the capture job establishes the low endpoint, a first row that waits for the
 * sort of the whole range when the ORDER BY is not the change table's clustered key. Always on:
 * cleanup prunes cdc.lsn_time_mapping (a quiet database goes back to a NULL max LSN); a key change
 * is a delete and an insert with one seqval, ordered only by __$command_id (updateKeys); text,
 * ntext and image are NULL in deletes and before-images, (max) columns in before-images unless
 * changed (__$update_mask).
 */
import { incrementLsn, lsnOf, lsnToHex } from '../../lib/sources/mssql/lsn.js';
import type { DriverChangeRow } from '../../lib/sources/mssql/queries.js';
import { tableKey, type TableRef } from '../../lib/sources/mssql/tables.js';
import type { ColumnInfo } from '../../lib/sources/mssql/types.js';
import { SqlServerError, type SqlType, type SqlValue } from './tds/types.js';

type Row = Record<string, unknown>;

export interface ModelColumn extends ColumnInfo {
  nullable: boolean;
  /** The declared type with its length/precision, for tables created through T-SQL. */
  sqlType?: SqlType;
  defaultValue?: () => SqlValue;
}

export interface ModelTable extends TableRef {
  objectId: number;
  columns: ModelColumn[];
  primaryKey: string[];
  /** By primary key (its values joined with '|'); in insertion order. */
  rows: Map<string, Row>;
  tracked: boolean;
}

export interface ModelInstance {
  name: string;
  objectId: number;
  table: ModelTable;
  /** NULL until the capture job has established the low endpoint (nullStartLsn). */
  startLsn: Buffer | null;
  /** Where the log was when the instance was enabled: changes from here on are captured. */
  enabledAt: Buffer;
  createDate: string;
  columns: ColumnInfo[];
  changes: DriverChangeRow[];
}

export interface ExtendedProperty {
  /** 0 database, 1 object (table). */
  class: 0 | 1;
  majorId: number;
  name: string;
  value: string | null;
}

interface Change {
  table: string;
  op: 'insert' | 'update' | 'delete';
  row: Row;
}

/**
 * One UPDATE statement changing primary keys: SQL Server runs it as a deferred (split) update,
 * every delete (1) then every insert (2), a row's delete and insert sharing one seqval; only
 * __$command_id tells the order.
 */
interface KeyUpdate {
  table: string;
  op: 'updateKeys';
  rows: Array<{ key: Row; set: Row }>;
}

/** text, ntext, image: NULL in deletes and before-images. */
const LOB_TYPES = new Set(['text', 'ntext', 'image']);

/** __$update_mask with the bits of `ordinals` set (fn_cdc_is_bit_set numbers bits from the last byte). */
function updateMask(width: number, ordinals: number[]): Buffer {
  const mask = Buffer.alloc(Math.max(1, Math.ceil(width / 8)));
  for (const p of ordinals) mask[mask.length - 1 - Math.floor((p - 1) / 8)]! |= 1 << ((p - 1) % 8);
  return mask;
}

/**
 * LSN order (as Buffer.compare: bytes, then length), in a loop: LSNs are 10 bytes, fewer than a
 * call of Buffer.compare costs, and the server compares them for every row it reads.
 */
export function compareLsn(a: Uint8Array, b: Uint8Array): number {
  if (a === b) return 0;
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x !== y) return x < y ? -1 : 1;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

/** Index of the first item (in LSN order) at `lsn` or after it (`inclusive`), or only after it. */
export function firstAtOrAfter<T>(items: readonly T[], lsnOf: (item: T) => Buffer, lsn: Buffer, inclusive: boolean): number {
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const c = compareLsn(lsnOf(items[mid]!), lsn);
    if (c < 0 || (c === 0 && !inclusive)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Where a scan in `lsnOf` order goes on after `last` once cleanup has removed rows below its
 * watermark: the item after `last`, or (when cleanup removed it, and with it every item of its LSN)
 * the first item past its LSN. SQL Server's scan goes on from the key it stands on, so the rows it
 * has passed take nothing with them.
 */
export function indexAfter<T>(items: readonly T[], lsnOf: (item: T) => Buffer, last: T): number {
  const lsn = lsnOf(last);
  const i = firstAtOrAfter(items, lsnOf, lsn, true);
  for (let j = i; j < items.length && compareLsn(lsnOf(items[j]!), lsn) === 0; j++) if (items[j] === last) return j + 1;
  return i;
}

/** The wire side of the server, which the model asks to break connections. */
export interface ModelConnections {
  dropConnections(): void;
  /** Reset one session's connection. */
  dropSession(id: number): boolean;
}

export class CdcModel {
  database = 'shop';
  cdcEnabled = true;
  /** 'unknown' models a login without VIEW SERVER STATE. */
  agent: 'running' | 'stopped' | 'unknown' = 'running';
  readonly tables = new Map<string, ModelTable>();
  readonly schemas = new Map<string, number>([
    ['dbo', 1],
    ['sys', 4],
    ['cdc', 5],
  ]);
  readonly instances: ModelInstance[] = [];
  readonly lsnTimeMapping: Array<{ lsn: Buffer; commitTime: string; tranId: number }> = [];
  /**
   * Where the last mappingEntry() lookup found its entry: change rows are read in LSN order, so the
   * next row's commit is at or just after it (a merge join, as SQL Server runs a read of change rows
   * with their commit times).
   */
  private mappingCursor = 0;
  readonly extendedProperties: ExtendedProperty[] = [];
  private lsnCounter = 0x2a_0000_0000n;
  private maxCaptured: Buffer | null = null;
  private pending: Array<{ lsn: Buffer; changes: Array<{ instance: ModelInstance; row: DriverChangeRow }> }> = [];
  private clock = Date.UTC(2026, 0, 1, 12);
  private tx = 0;
  private nextObjectId = 1_000_000;
  /** Application locks: resource -> the session (SPID) owning it. */
  readonly locks = new Map<string, number>();
  /** The logins the server accepts. */
  readonly logins = new Map<string, string>([['dstream', 'Str0ng-Passw0rd']]);
  /** Refuse every login (as for a wrong password). */
  loginFails = false;
  /** Objects, functions or procedures (as 'schema.name') whose use fails with error 229. */
  readonly denied = new Set<string>();
  /** How often each object, function or procedure was named by a statement, and 'login'. */
  readonly calls = new Map<string, number>();
  /** Time the server takes for every statement. */
  latencyMs = 0;
  /** Reads of change rows (cdc.fn_cdc_get_all_changes_*, cdc.<instance>_CT) open at once, and the most there were. */
  openStreams = 0;
  maxOpenStreams = 0;
  /** Rows of the change tables (cdc.<instance>_CT) built for statements; a count by key builds none. */
  changeTableRowsBuilt = 0;
  /** Entries of cdc.lsn_time_mapping handed to statements as rows; a count by key hands none. */
  mappingRowsBuilt = 0;
  /** Set by the server hosting the model. */
  connections: ModelConnections | undefined;
  /** The capture job runs only when a test calls runCapture() (its own schedule), not after every commit. */
  captureLag = false;
  /** New capture instances have a NULL start_lsn until the capture job runs. */
  nullStartLsn = false;
  /**
   * Milliseconds per row of the range before the first row of cdc.fn_cdc_get_all_changes_*: its
   * ORDER BY is not the change table's clustered key, so SQL Server sorts the range first.
   */
  sortMsPerRow = 0;
  /**
   * Called with each object, function or procedure a statement names, before it runs: lets a
   * test make something happen at that moment; a promise returned holds the statement (a stall).
   */
  beforeStatement: ((name: string) => void | Promise<void>) | undefined;

  createTable(name: string, columns: Array<ColumnInfo & { nullable?: boolean; sqlType?: SqlType; defaultValue?: () => SqlValue }>, primaryKey: string[]): ModelTable {
    const [schema, table] = name.includes('.') ? name.split('.') : ['dbo', name];
    if (!this.schemas.has(schema!)) this.schemas.set(schema!, this.nextObjectId++);
    const t: ModelTable = {
      schema: schema!,
      table: table!,
      objectId: this.nextObjectId++,
      columns: columns.map((c) => ({ nullable: true, ...c })),
      primaryKey,
      rows: new Map(),
      tracked: false,
    };
    this.tables.set(`${schema}.${table}`, t);
    return t;
  }

  hasTable(name: string): boolean {
    return this.tables.has(name.includes('.') ? name : `dbo.${name}`);
  }

  private table(name: string): ModelTable {
    const key = name.includes('.') ? name : `dbo.${name}`;
    const t = this.tables.get(key);
    if (t === undefined) throw new Error(`model: no table ${key}`);
    return t;
  }

  /** Commit times from the machine's clock instead of one second per commit (latency benchmarks). */
  wallClock = false;

  /** The server clock now: one second per commit (or the machine's clock); enables come half-way between two commits. */
  private timeAt(offsetMs: number): string {
    return new Date((this.wallClock ? Date.now() : this.clock + this.tx * 1000) + offsetMs).toISOString().slice(0, 23);
  }

  private newLsn(): Buffer {
    this.lsnCounter += 0x10n;
    return lsnOf(this.lsnCounter);
  }

  /** sys.sp_cdc_enable_table: a capture instance starting at the next LSN. */
  enableTable(name: string, instanceName?: string): string {
    const t = this.table(name);
    if (!this.cdcEnabled) throw new SqlServerError(22901, `The database '${this.database}' is not enabled for Change Data Capture. Ensure that the correct database context is set and retry the operation. To report on the databases enabled for Change Data Capture, query the is_cdc_enabled column in the sys.databases catalog view.`);
    const own = this.instances.filter((i) => i.table === t);
    if (own.length >= 2) throw new SqlServerError(22962, `Two capture instances already exist for source table '${tableKey(t)}'. A table can have at most two capture instances. If the current tracking options are not appropriate, disable change tracking for the obsolete instance by using sys.sp_cdc_disable_table and retry the operation.`);
    const instance: ModelInstance = {
      name: instanceName ?? `${t.schema}_${t.table}${own.length > 0 ? '_v2' : ''}`,
      objectId: this.nextObjectId++,
      table: t,
      startLsn: this.nullStartLsn ? null : incrementLsn(lsnOf(this.lsnCounter)),
      enabledAt: incrementLsn(lsnOf(this.lsnCounter)),
      createDate: this.timeAt(500),
      columns: t.columns.map((c) => ({ name: c.name, type: c.type, ...(c.max || c.sqlType?.length === 'max' ? { max: true } : {}) })),
      changes: [],
    };
    if (this.instances.some((i) => i.name.toLowerCase() === instance.name.toLowerCase())) {
      throw new SqlServerError(22926, `Could not create a capture instance because the capture instance name '${instance.name}' already exists in the current database. Specify an explicit unique name for the parameter @capture_instance.`);
    }
    this.instances.push(instance);
    t.tracked = true;
    return instance.name;
  }

  disableInstance(name: string): void {
    const i = this.instances.findIndex((x) => x.name === name);
    if (i < 0) throw new Error(`model: no instance ${name}`);
    const [gone] = this.instances.splice(i, 1);
    gone!.table.tracked = this.instances.some((x) => x.table === gone!.table);
  }

  /**
   * DROP TABLE: allowed on a tracked table too; SQL Server's CDC DDL trigger then drops the table's
   * capture instances and change tables, and the table's extended properties go with it.
   */
  dropTable(name: string): void {
    const t = this.table(name);
    for (const i of this.instances.filter((x) => x.table === t)) this.disableInstance(i.name);
    this.tables.delete(`${t.schema}.${t.table}`);
    this.extendedProperties.splice(0, this.extendedProperties.length, ...this.extendedProperties.filter((p) => !(p.class === 1 && p.majorId === t.objectId)));
  }

  /** sys.sp_cdc_disable_db: every capture instance goes, and the cdc schema's objects with them. */
  disableDatabase(): void {
    for (const i of [...this.instances]) this.disableInstance(i.name);
    this.cdcEnabled = false;
  }

  /** ALTER TABLE ADD column (existing rows get null). Existing capture instances keep their columns. */
  addColumn(name: string, column: ColumnInfo): void {
    const t = this.table(name);
    t.columns.push({ ...column, nullable: true });
    for (const r of t.rows.values()) r[column.name] = null;
  }

  /** One committed transaction. Returns its LSN (hex). */
  commit(changes: Change[]): string {
    return this.commitAll(changes);
  }

  /** One transaction of one UPDATE that changes the keys of `rows` (a deferred update). Returns its LSN (hex). */
  updateKeys(table: string, rows: KeyUpdate['rows']): string {
    return this.commitAll([{ table, op: 'updateKeys', rows }]);
  }

  private commitAll(changes: Array<Change | KeyUpdate>): string {
    const lsn = this.newLsn();
    this.tx++;
    const commitTime = this.timeAt(0);
    const captured: Array<{ instance: ModelInstance; row: DriverChangeRow }> = [];
    let seq = 0;
    let command = 0;
    for (const c of changes) {
      const t = this.table(c.table);
      const record = (op: number, image: Row, seqval: Buffer, commandId: number, changed?: Set<string>) => {
        for (const i of this.instances) {
          if (i.table !== t || compareLsn(lsn, i.enabledAt) < 0) continue;
          const ordinals = i.columns.flatMap((col, n) => (changed === undefined || changed.has(col.name) ? [n + 1] : []));
          const row: DriverChangeRow = { __$start_lsn: lsn, __$seqval: seqval, __$operation: op, __$command_id: commandId, __$update_mask: updateMask(i.columns.length, ordinals) };
          for (const col of i.columns) {
            // Documented: text/ntext/image are NULL when __$operation is 1 or 3; (max) columns are
            // NULL when it is 3 unless the update changed them.
            const unavailable = ((op === 1 || op === 3) && LOB_TYPES.has(col.type.toLowerCase())) || (op === 3 && col.max === true && changed !== undefined && !changed.has(col.name));
            row[col.name] = unavailable ? null : (image[col.name] ?? null);
          }
          captured.push({ instance: i, row });
        }
      };
      if (c.op === 'updateKeys') {
        const moves = c.rows.map((r) => {
          const pk = t.primaryKey.map((k) => String(r.key[k])).join('|');
          const before = t.rows.get(pk);
          if (!before) throw new Error(`model: no row ${pk} in ${tableKey(t)}`);
          return { pk, before, after: { ...before, ...r.set }, seqval: lsnOf(this.lsnCounter * 0x10000n + BigInt(++seq)) };
        });
        for (const mv of moves) {
          t.rows.delete(mv.pk);
          record(1, mv.before, mv.seqval, ++command);
        }
        for (const mv of moves) {
          const pk = t.primaryKey.map((k) => String(mv.after[k])).join('|');
          if (t.rows.has(pk)) throw new Error(`model: duplicate key ${pk} in ${tableKey(t)}`);
          t.rows.set(pk, mv.after);
          record(2, mv.after, mv.seqval, ++command);
        }
        continue;
      }
      // A table without a primary key (a heap): its rows told apart by all their columns.
      const pk = (t.primaryKey.length > 0 ? t.primaryKey : t.columns.map((col) => col.name)).map((k) => String(c.row[k])).join('|');
      const before = t.rows.get(pk);
      seq++;
      const seqval = lsnOf(this.lsnCounter * 0x10000n + BigInt(seq));
      command++;
      if (c.op === 'insert') {
        if (before) throw new Error(`model: duplicate key ${pk} in ${tableKey(t)}`);
        const full = Object.fromEntries(t.columns.map((col) => [col.name, c.row[col.name] ?? null]));
        t.rows.set(pk, full);
        record(2, full, seqval, command);
      } else if (c.op === 'update') {
        if (!before) throw new Error(`model: no row ${pk} in ${tableKey(t)}`);
        const after = { ...before, ...c.row };
        t.rows.set(pk, after);
        // The SET list: every column named except the key.
        const changed = new Set(Object.keys(c.row).filter((k) => !t.primaryKey.includes(k)));
        record(3, before, seqval, command, changed);
        record(4, after, seqval, command, changed);
      } else {
        if (!before) throw new Error(`model: no row ${pk} in ${tableKey(t)}`);
        t.rows.delete(pk);
        record(1, before, seqval, command);
      }
    }
    this.lsnTimeMapping.push({ lsn, commitTime, tranId: this.tx });
    this.pending.push({ lsn, changes: captured });
    if (this.agent !== 'stopped' && !this.captureLag) this.runCapture();
    return lsnToHex(lsn);
  }

  /** An lsn_time_mapping entry without changes, as SQL Server logs in quiet periods. */
  tick(): string {
    const lsn = this.newLsn();
    this.lsnTimeMapping.push({ lsn, commitTime: new Date(this.clock + ++this.tx * 1000).toISOString().slice(0, 23), tranId: 0 });
    this.pending.push({ lsn, changes: [] });
    if (this.agent !== 'stopped' && !this.captureLag) this.runCapture();
    return lsnToHex(lsn);
  }

  /** The capture job: moves logged changes into the change tables and max LSN forward. */
  runCapture(): void {
    for (const p of this.pending) {
      for (const { instance, row } of p.changes) instance.changes.push(row);
      this.maxCaptured = p.lsn;
    }
    this.pending = [];
    // The scan has passed the enable: the low endpoint is established.
    for (const i of this.instances) i.startLsn ??= i.enabledAt;
  }

  /**
   * The cleanup job: removes changes below `lowWatermark` (hex), raises each instance's start, and
   * prunes cdc.lsn_time_mapping below it; with nothing left there, max LSN is NULL again.
   */
  cleanup(lowWatermark: string): void {
    const low = Buffer.from(lowWatermark.slice(2), 'hex');
    for (const i of this.instances) {
      i.changes = i.changes.filter((r) => compareLsn(r.__$start_lsn, low) >= 0);
      if (i.startLsn !== null && compareLsn(i.startLsn, low) < 0) i.startLsn = low;
    }
    // In start_lsn order: the entries below the watermark are a prefix, pruned in place.
    this.lsnTimeMapping.splice(0, firstAtOrAfter(this.lsnTimeMapping, (e) => e.lsn, low, true));
    const max = this.maxCaptured;
    if (max !== null && !this.lsnTimeMapping.some((e) => compareLsn(e.lsn, max) <= 0)) this.maxCaptured = null;
  }

  /** The session (SPID) that holds `resource`, if any. */
  lockOwner(resource: string): number | undefined {
    return this.locks.get(resource);
  }

  /**
   * One connection dies (KILL, a network blip): its requests fail and SQL Server releases its
   * session locks; a client pool opens a new connection for its next statement without a word.
   */
  killSession(id: number): void {
    if (this.connections === undefined) throw new Error('model: not hosted by a server (startSqlServer)');
    if (!this.connections.dropSession(id)) throw new Error(`model: no session ${id}`);
  }

  get currentMaxLsn(): string | null {
    return this.maxCaptured === null ? null : lsnToHex(this.maxCaptured);
  }

  /** Every open connection breaks (reset by the server): in-flight statements fail, session locks go with their sessions. */
  dropConnections(): void {
    if (this.connections === undefined) throw new Error('model: not hosted by a server (startSqlServer)');
    this.connections.dropConnections();
  }

  count(name: string): void {
    this.calls.set(name, (this.calls.get(name) ?? 0) + 1);
  }

  /** What each statement goes through for each object it names: counts, the test's hook, permissions. */
  async named(name: string, action: 'SELECT' | 'EXECUTE' = 'SELECT'): Promise<void> {
    this.count(name);
    await this.beforeStatement?.(name);
    if (this.denied.has(name)) {
      const [schema, object] = name.includes('.') ? name.split('.') : ['dbo', name];
      throw new SqlServerError(229, `The ${action} permission was denied on the object '${object}', database '${this.database}', schema '${schema}'.`, 14);
    }
  }

  // --- what the capture functions answer ---

  /** sys.fn_cdc_get_max_lsn(): the last LSN the capture job processed; NULL before it ran. */
  maxLsn(): Buffer | null {
    return this.maxCaptured;
  }

  /** sys.fn_cdc_get_min_lsn(): the instance's start; 0x00... for an instance that does not exist or has no start yet. */
  minLsn(instance: string): Buffer {
    const i = this.instance(instance);
    return i === undefined || i.startLsn === null ? Buffer.alloc(10) : Buffer.from(i.startLsn);
  }

  /** sys.fn_cdc_map_lsn_to_time(): the commit time of the greatest mapping entry at or below @lsn. */
  lsnToTime(lsn: Buffer): string | null {
    const max = this.maxCaptured;
    if (max === null) return null;
    const at = Math.min(firstAtOrAfter(this.lsnTimeMapping, (e) => e.lsn, lsn, false), firstAtOrAfter(this.lsnTimeMapping, (e) => e.lsn, max, false));
    return at > 0 ? this.lsnTimeMapping[at - 1]!.commitTime : null;
  }

  /** The cdc.lsn_time_mapping entry of exactly `lsn`, if the capture job has written it. */
  mappingEntry(lsn: Buffer): { lsn: Buffer; commitTime: string; tranId: number } | undefined {
    const max = this.maxCaptured;
    if (max === null || compareLsn(lsn, max) > 0) return undefined;
    const list = this.lsnTimeMapping;
    // A change row carries its commit's own LSN Buffer: found by identity a few entries on, else sought.
    for (let i = this.mappingCursor, end = Math.min(i + 8, list.length); i < end; i++) {
      if (list[i]!.lsn === lsn) {
        this.mappingCursor = i;
        return list[i];
      }
    }
    const at = firstAtOrAfter(list, (x) => x.lsn, lsn, true);
    const e = list[at];
    if (e === undefined || compareLsn(e.lsn, lsn) !== 0) return undefined;
    this.mappingCursor = at;
    return e;
  }

  /** cdc.lsn_time_mapping as the capture job has written it so far, from `from` (a seek on start_lsn). */
  *visibleMapping(from?: Buffer, inclusive = true): Generator<{ lsn: Buffer; commitTime: string; tranId: number }> {
    const max = this.maxCaptured;
    if (max === null) return;
    const list = this.lsnTimeMapping;
    const lsnOf = (e: { lsn: Buffer }) => e.lsn;
    let last: (typeof list)[number] | undefined;
    for (let i = from ? firstAtOrAfter(list, lsnOf, from, inclusive) : 0; ; i++) {
      // Cleanup prunes the mapping in place while a scan waits for its client.
      if (last !== undefined && list[i - 1] !== last) i = indexAfter(list, lsnOf, last);
      if (i >= list.length) return;
      const e = list[i]!;
      if (compareLsn(e.lsn, max) > 0) return;
      this.mappingRowsBuilt++;
      last = e;
      yield e;
    }
  }

  /**
   * The start LSNs of cdc.lsn_time_mapping as the capture job has written it, within the bounds,
   * each handed to `visit` until it returns false (an index-only seek: no entry or row per LSN).
   */
  visibleMappingLsns(lo: { lsn: Buffer; inclusive: boolean } | undefined, hi: { lsn: Buffer; inclusive: boolean } | undefined, visit: (lsn: Buffer) => boolean): void {
    const max = this.maxCaptured;
    if (max === null) return;
    const list = this.lsnTimeMapping;
    const of = (e: { lsn: Buffer }) => e.lsn;
    let end = firstAtOrAfter(list, of, max, false);
    if (hi) end = Math.min(end, firstAtOrAfter(list, of, hi.lsn, !hi.inclusive));
    for (let i = lo ? firstAtOrAfter(list, of, lo.lsn, lo.inclusive) : 0; i < end; i++) if (!visit(list[i]!.lsn)) return;
  }

  /**
   * cdc.fn_cdc_get_all_changes_<instance>(@from_lsn, @to_lsn, @row_filter_option): error 313 for
   * a range outside the instance's validity or an unknown row filter option, else the rows in
   * (start LSN, seqval, operation) order, before-images (3) only with 'all update old'.
   */
  *changeRows(instance: ModelInstance, from: Buffer | null, to: Buffer | null, filter: string | null): Generator<DriverChangeRow> {
    const max = this.maxCaptured;
    const option = (filter ?? '').trim().toLowerCase();
    const start = instance.startLsn;
    if (from === null || to === null || max === null || start === null || compareLsn(from, start) < 0 || compareLsn(to, max) > 0 || compareLsn(from, to) > 0 || (option !== 'all' && option !== 'all update old')) {
      throw new SqlServerError(313, `An insufficient number of arguments were supplied for the procedure or function cdc.fn_cdc_get_all_changes_ ... .`);
    }
    const old = option === 'all update old';
    // The function's order: (start LSN, seqval, operation), which is not the change table's (its
    // clustered key has __$command_id before __$seqval).
    const ordered = instance.changes
      .slice(firstAtOrAfter(instance.changes, (r) => r.__$start_lsn, from, true), firstAtOrAfter(instance.changes, (r) => r.__$start_lsn, to, false))
      .sort((a, b) => compareLsn(a.__$start_lsn, b.__$start_lsn) || compareLsn(a.__$seqval, b.__$seqval) || a.__$operation - b.__$operation);
    for (let n = 0; n < ordered.length; n++) {
      const r = ordered[n]!;
      if (compareLsn(r.__$start_lsn, from) < 0) continue;
      if (compareLsn(r.__$start_lsn, to) > 0) break;
      if (r.__$operation === 3 && !old) continue;
      yield r;
    }
  }

  instance(name: string): ModelInstance | undefined {
    return this.instances.find((i) => i.name.toLowerCase() === name.toLowerCase());
  }

  // --- application locks (sp_getapplock with @LockOwner = 'Session') ---

  tryLock(resource: string, session: number): boolean {
    const owner = this.locks.get(resource);
    if (owner !== undefined && owner !== session) return false;
    this.locks.set(resource, session);
    return true;
  }

  releaseLocks(session: number): void {
    for (const [resource, owner] of this.locks) if (owner === session) this.locks.delete(resource);
  }
}

/** Persons, sales.Orders and Customers with CDC enabled: the shape of the tests and examples. */
export function shopModel(): CdcModel {
  const m = new CdcModel();
  m.createTable('dbo.Persons', [{ name: 'Id', type: 'int', nullable: false }, { name: 'Name', type: 'nvarchar' }, { name: 'Email', type: 'nvarchar' }], ['Id']);
  m.createTable('sales.Orders', [{ name: 'OrderId', type: 'bigint', nullable: false }, { name: 'CustomerId', type: 'int' }, { name: 'Total', type: 'decimal' }], ['OrderId']);
  m.createTable('dbo.Customers', [{ name: 'CustomerId', type: 'int', nullable: false }, { name: 'Company', type: 'nvarchar' }], ['CustomerId']);
  m.enableTable('dbo.Persons');
  m.enableTable('sales.Orders');
  m.enableTable('dbo.Customers');
  return m;
}
