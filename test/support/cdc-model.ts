/**
 * An in-memory model of SQL Server change data capture behind dstream's CdcQueries interface:
 * source tables, capture instances with change tables, cdc.lsn_time_mapping, the capture job
 * (SQL Server Agent), the cleanup job, application locks owned by sessions, and connections that
 * can be refused or dropped.
 *
 * It follows the documented behaviour, including the errors: cdc.fn_cdc_get_all_changes_<instance>
 * fails (error 313) when @from is below the instance's min LSN, @to above the max LSN or @from
 * past @to; sys.fn_cdc_get_min_lsn returns 0x00... for an unknown instance; an update is two rows
 * with the same seqval (operation 3 before, 4 after); max LSN moves only when the capture job runs.
 * Column values are stored in the form the driver returns for dstream's select expressions
 * (sql.ts): exact numbers and dates as text, bytes as Buffers.
 *
 * Awkward behaviours of a real server, each off until a test turns it on: capture lag (the capture
 * job runs on its own schedule, so max LSN lies behind a new instance's start_lsn), a NULL
 * start_lsn until the capture job establishes the low endpoint, cleanup pruning
 * cdc.lsn_time_mapping (a quiet database goes back to a NULL max LSN), deferred updates (a key
 * change is a delete and an insert with one seqval, ordered by __$command_id), LOB columns NULL in
 * deletes and before-images, a first row that waits for the sort of the whole range when the
 * ORDER BY is not the change table's clustered key, and a connection that dies while its pool
 * opens a new one silently.
 */
import { Readable } from 'node:stream';
import { compareLsn, incrementLsn, lsnOf, lsnToHex } from '../../lib/sources/mssql/lsn.js';
import type { CaptureInstance, CdcConnector, CdcQueries, ChangeReadOptions, CheckpointRow, ConnectOptions, DriverChangeRow, Marks, TableColumns } from '../../lib/sources/mssql/queries.js';
import { tableKey, type TableRef } from '../../lib/sources/mssql/tables.js';
import type { ColumnInfo } from '../../lib/sources/mssql/types.js';

type Row = Record<string, unknown>;

interface ModelTable extends TableRef {
  columns: Array<ColumnInfo & { nullable: boolean }>;
  primaryKey: string[];
  rows: Map<string, Row>;
  tracked: boolean;
}

interface ModelInstance {
  name: string;
  table: ModelTable;
  /** NULL until the capture job has established the low endpoint (nullStartLsn). */
  startLsn: Buffer | null;
  /** Where the log was when the instance was enabled: changes from here on are captured. */
  enabledAt: Buffer;
  createDate: string;
  columns: ColumnInfo[];
  changes: DriverChangeRow[];
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

function driverError(name: 'ConnectionError' | 'RequestError', code: string, message: string, number?: number): Error {
  return Object.assign(new Error(message), { name, code, ...(number !== undefined ? { number } : {}) });
}

export class CdcModel {
  database = 'shop';
  cdcEnabled = true;
  /** 'unknown' models a login without VIEW SERVER STATE. */
  agent: 'running' | 'stopped' | 'unknown' = 'running';
  readonly where = '127.0.0.1:1433/shop';
  readonly tables = new Map<string, ModelTable>();
  readonly instances: ModelInstance[] = [];
  readonly lsnTimeMapping: Array<{ lsn: Buffer; commitTime: string; tranId: number }> = [];
  private lsnCounter = 0x2a_0000_0000n;
  private maxCaptured: Buffer | null = null;
  private pending: Array<{ lsn: Buffer; changes: Array<{ instance: ModelInstance; row: DriverChangeRow }> }> = [];
  private clock = Date.UTC(2026, 0, 1, 12);
  private tx = 0;
  readonly locks = new Map<string, number>();
  readonly checkpointTables = new Map<string, Map<string, { task: string; table: string; lsn: Buffer | null; position: string | null; source: string | null; savedAt: string }>>();
  readonly marks: Marks = { database: null, tables: new Map() };
  private nextSession = 1;
  readonly sessions = new Set<ModelSession>();
  /** Connection attempts to refuse before accepting again (Infinity: the server is down). */
  refuseConnections = 0;
  /** Refuse the login (wrong password). */
  loginFails = false;
  /** Statement names that fail with "permission denied" (error 229). */
  readonly denied = new Set<string>();
  /** Calls per statement, for tests that check what the reader asked. */
  readonly calls = new Map<string, number>();
  /** Round-trip time of every statement (a real server is not in-process). */
  latencyMs = 0;
  /** Most change streams open at once. */
  maxOpenStreams = 0;
  openStreams = 0;
  /** The capture job runs only when a test calls runCapture() (its own schedule), not after every commit. */
  captureLag = false;
  /** New capture instances have a NULL start_lsn until the capture job runs. */
  nullStartLsn = false;
  /**
   * Milliseconds per row in the range before the first row of a change read whose ORDER BY is not
   * the change table's clustered key (the change function's): SQL Server sorts the range first.
   */
  sortMsPerRow = 0;
  /** Change reads stopped before their end (the client cancelled them). */
  cancelledReads = 0;

  createTable(name: string, columns: Array<ColumnInfo & { nullable?: boolean }>, primaryKey: string[]): void {
    const [schema, table] = name.includes('.') ? name.split('.') : ['dbo', name];
    this.tables.set(`${schema}.${table}`, {
      schema: schema!,
      table: table!,
      columns: columns.map((c) => ({ nullable: true, ...c })),
      primaryKey,
      rows: new Map(),
      tracked: false,
    });
  }

  private table(name: string): ModelTable {
    const key = name.includes('.') ? name : `dbo.${name}`;
    const t = this.tables.get(key);
    if (t === undefined) throw new Error(`model: no table ${key}`);
    return t;
  }

  /** The server clock now: one second per commit, enables half-way between two commits. */
  private timeAt(offsetMs: number): string {
    return new Date(this.clock + this.tx * 1000 + offsetMs).toISOString().slice(0, 23);
  }

  newSpid(): number {
    return this.nextSession++;
  }

  private newLsn(): Buffer {
    this.lsnCounter += 0x10n;
    return lsnOf(this.lsnCounter);
  }

  /** sys.sp_cdc_enable_table: a capture instance starting at the next LSN. */
  enableTable(name: string, instanceName?: string): string {
    const t = this.table(name);
    if (!this.cdcEnabled) throw driverError('RequestError', 'EREQUEST', `Database '${this.database}' is not enabled for Change Data Capture.`, 22901);
    const own = this.instances.filter((i) => i.table === t);
    if (own.length >= 2) throw driverError('RequestError', 'EREQUEST', 'A table can have only two capture instances', 22962);
    const enabledAt = incrementLsn(lsnOf(this.lsnCounter));
    const instance: ModelInstance = {
      name: instanceName ?? `${t.schema}_${t.table}${own.length > 0 ? '_v2' : ''}`,
      table: t,
      startLsn: this.nullStartLsn ? null : enabledAt,
      enabledAt,
      createDate: this.timeAt(500),
      columns: t.columns.map((c, i) => ({ name: c.name, type: c.type, ordinal: i + 1, ...(c.max ? { max: true } : {}) })),
      changes: [],
    };
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
          const ordinals = i.columns.filter((col) => changed === undefined || changed.has(col.name)).map((col) => col.ordinal!);
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
        for (const m of moves) {
          t.rows.delete(m.pk);
          record(1, m.before, m.seqval, ++command);
        }
        for (const m of moves) {
          const pk = t.primaryKey.map((k) => String(m.after[k])).join('|');
          if (t.rows.has(pk)) throw new Error(`model: duplicate key ${pk} in ${tableKey(t)}`);
          t.rows.set(pk, m.after);
          record(2, m.after, m.seqval, ++command);
        }
        continue;
      }
      const pk = t.primaryKey.map((k) => String(c.row[k])).join('|');
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
    this.lsnTimeMapping.splice(0, this.lsnTimeMapping.length, ...this.lsnTimeMapping.filter((e) => compareLsn(e.lsn, low) >= 0));
    const max = this.maxCaptured;
    if (max !== null && !this.lsnTimeMapping.some((e) => compareLsn(e.lsn, max) <= 0)) this.maxCaptured = null;
  }

  /** The session (connection) that holds `resource`, if any. */
  lockOwner(resource: string): number | undefined {
    return this.locks.get(resource);
  }

  /**
   * One connection dies (KILL, a network blip): its requests fail, SQL Server releases its session
   * locks, and its pool opens a new connection for the next statement without a word.
   */
  killSession(id: number): void {
    for (const s of this.sessions) if (s.id === id) s.kill();
  }

  get currentMaxLsn(): string | null {
    return this.maxCaptured === null ? null : lsnToHex(this.maxCaptured);
  }

  /** Every open connection breaks: in-flight statements and streams fail, session locks are released. */
  dropConnections(): void {
    for (const s of [...this.sessions]) s.break();
  }

  connector(): CdcConnector {
    return async (options: ConnectOptions = {}) => {
      this.count('connect');
      if (this.refuseConnections > 0) {
        this.refuseConnections--;
        throw Object.assign(driverError('ConnectionError', 'ESOCKET', 'Failed to connect to 127.0.0.1:1433 - connect ECONNREFUSED 127.0.0.1:1433'), { where: this.where });
      }
      if (this.loginFails) throw Object.assign(driverError('ConnectionError', 'ELOGIN', "Login failed for user 'dstream'."), { where: this.where });
      const s = new ModelSession(this, this.nextSession++, options);
      this.sessions.add(s);
      return s;
    };
  }

  count(name: string): void {
    this.calls.set(name, (this.calls.get(name) ?? 0) + 1);
  }

  // --- what ModelSession answers ---

  /** Called before each statement runs: lets a test make something happen at that moment. */
  beforeStatement: ((name: string) => void) | undefined;

  statement(name: string): void {
    this.count(name);
    this.beforeStatement?.(name);
    if (this.denied.has(name)) throw driverError('RequestError', 'EREQUEST', `The SELECT permission was denied on the object '${name}', database '${this.database}', schema 'cdc'.`, 229);
  }

  requireCdc(): void {
    if (!this.cdcEnabled) throw driverError('RequestError', 'EREQUEST', "Invalid object name 'cdc.change_tables'.", 208);
  }

  captureInstances(): CaptureInstance[] {
    return this.instances.map((i) => ({ name: i.name, schema: i.table.schema, table: i.table.table, startLsn: i.startLsn && Buffer.from(i.startLsn), createDate: i.createDate, columns: i.columns.map((c) => ({ ...c })) }));
  }

  instance(name: string): ModelInstance | undefined {
    return this.instances.find((i) => i.name === name);
  }

  get maxLsnBuffer(): Buffer | null {
    return this.maxCaptured;
  }
}

class ModelSession implements CdcQueries {
  private broken = false;
  private closed = false;
  private readonly streams = new Set<Readable>();
  /** Streams waiting for a free connection of the pool, as the driver's pool makes requests wait. */
  private readonly waiting: Array<() => void> = [];
  private active = 0;
  readonly where: string;

  constructor(
    private readonly m: CdcModel,
    public id: number,
    readonly options: ConnectOptions,
  ) {
    this.where = m.where;
  }

  /** This connection dies; the pool answers the next statement on a new one (a new SPID, no locks). */
  kill(): void {
    for (const [resource, owner] of this.m.locks) if (owner === this.id) this.m.locks.delete(resource);
    for (const s of this.streams) s.destroy(driverError('ConnectionError', 'ECONNCLOSED', 'Connection lost - read ECONNRESET'));
    this.id = this.m.newSpid();
    this.options.onSessionLost?.();
  }

  break(): void {
    this.broken = true;
    for (const [resource, owner] of this.m.locks) if (owner === this.id) this.m.locks.delete(resource);
    for (const s of this.streams) s.destroy(driverError('RequestError', 'ECONNCLOSED', 'Connection lost - read ECONNRESET'));
    this.m.sessions.delete(this);
  }

  private async run<T>(name: string, fn: () => T): Promise<T> {
    if (this.m.latencyMs > 0) await new Promise((r) => setTimeout(r, this.m.latencyMs));
    else await Promise.resolve();
    if (this.closed) throw driverError('ConnectionError', 'ENOTOPEN', 'Connection not yet open.');
    if (this.broken) throw driverError('ConnectionError', 'ECONNCLOSED', 'Connection is closed.');
    this.m.statement(name);
    return fn();
  }

  /** `sortMsPerRow`: the first row waits for a sort of every row (capped by the request timeout, as the driver's). */
  private stream(name: string, rows: () => Iterable<Row>, sortMsPerRow = 0): Readable {
    const m = this.m;
    const self = this;
    const timeout = this.options.requestTimeoutMs ?? 15_000;
    let sorting = false;
    const out = new Readable({
      objectMode: true,
      highWaterMark: 512,
      read() {},
    });
    let iterator: Iterator<Row> | undefined;
    let queued = false;
    let holds = false;
    const pool = this.options.single ? 1 : Math.max(2, this.options.maxConnections ?? 10);
    out._read = function () {
      if (sorting) return;
      try {
        if (iterator === undefined) {
          if (self.closed || self.broken) throw driverError('ConnectionError', 'ECONNCLOSED', 'Connection is closed.');
          if (self.active >= pool) {
            // Every connection is busy with a stream nobody has finished reading: wait for one.
            if (!queued) self.waiting.push(() => ((queued = false), out.read(0)));
            queued = true;
            return;
          }
          self.active++;
          holds = true;
          m.statement(name);
          if (sortMsPerRow > 0) {
            const all = [...rows()];
            const delay = all.length * sortMsPerRow;
            sorting = true;
            const timer = setTimeout(
              () => {
                sorting = false;
                if (timeout > 0 && delay >= timeout) out.destroy(driverError('RequestError', 'ETIMEOUT', `Timeout: Request failed to complete in ${timeout}ms`));
                else {
                  iterator = all[Symbol.iterator]();
                  // The pending _read() never pushed: push now.
                  out._read(0);
                }
              },
              timeout > 0 ? Math.min(delay, timeout) : delay,
            );
            out.once('close', () => clearTimeout(timer));
            return;
          }
          iterator = rows()[Symbol.iterator]();
        }
        for (;;) {
          const n = iterator.next();
          if (n.done) {
            this.push(null);
            return;
          }
          if (!this.push(n.value)) return;
        }
      } catch (err) {
        this.destroy(err as Error);
      }
    };
    m.openStreams++;
    m.maxOpenStreams = Math.max(m.maxOpenStreams, m.openStreams);
    this.streams.add(out);
    out.once('close', () => {
      if (!out.readableEnded && iterator !== undefined) m.cancelledReads++;
      m.openStreams--;
      this.streams.delete(out);
      if (holds) {
        this.active--;
        this.waiting.shift()?.();
      }
    });
    out.once('end', () => {
      // The request is done with its connection once its last row is read.
      if (holds) {
        holds = false;
        this.active--;
        this.waiting.shift()?.();
      }
    });
    return out;
  }

  databaseInfo() {
    return this.run('databaseInfo', () => ({ database: this.m.database, cdcEnabled: this.m.cdcEnabled }));
  }

  agentState() {
    return this.run('agentState', () => this.m.agent);
  }

  sourceTables() {
    return this.run('sourceTables', () => [...this.m.tables.values()].map((t) => ({ schema: t.schema, table: t.table, tracked: t.tracked })));
  }

  captureInstances() {
    return this.run('captureInstances', () => {
      this.m.requireCdc();
      return this.m.captureInstances();
    });
  }

  tableColumns(): Promise<TableColumns[]> {
    return this.run('tableColumns', () =>
      [...this.m.tables.values()].map((t) => ({ schema: t.schema, table: t.table, columns: t.columns.map((c) => ({ ...c })), primaryKey: [...t.primaryKey] })),
    );
  }

  maxLsn() {
    return this.run('maxLsn', () => {
      this.m.requireCdc();
      const max = this.m.maxLsnBuffer;
      return max === null ? null : Buffer.from(max);
    });
  }

  minLsn(instance: string) {
    return this.run('minLsn', () => {
      this.m.requireCdc();
      const i = this.m.instance(instance);
      // 0x00... for an unknown instance, and for one whose low endpoint is not established yet.
      return i === undefined || i.startLsn === null ? Buffer.alloc(10) : Buffer.from(i.startLsn);
    });
  }

  incrementLsn(lsn: Buffer) {
    return this.run('incrementLsn', () => incrementLsn(lsn));
  }

  lsnTime(lsn: Buffer) {
    return this.run('lsnTime', () => {
      // sys.fn_cdc_map_lsn_to_time: the commit time of the greatest entry at or below @lsn.
      let t: string | null = null;
      for (const e of this.m.lsnTimeMapping) if (compareLsn(e.lsn, lsn) <= 0) t = e.commitTime;
      return t;
    });
  }

  transactions(from: Buffer, to: Buffer, limit: number) {
    return this.run('transactions', () => {
      this.m.requireCdc();
      const out = [];
      for (const e of this.m.lsnTimeMapping) {
        if (out.length >= limit) break;
        if (compareLsn(e.lsn, from) >= 0 && compareLsn(e.lsn, to) <= 0 && (this.m.maxLsnBuffer === null || compareLsn(e.lsn, this.m.maxLsnBuffer) <= 0)) {
          out.push({ lsn: Buffer.from(e.lsn), commitTime: e.commitTime });
        }
      }
      return out;
    });
  }

  countTransactions(after: Buffer, to: Buffer) {
    return this.run('countTransactions', () => this.m.lsnTimeMapping.filter((e) => e.tranId !== 0 && compareLsn(e.lsn, after) > 0 && compareLsn(e.lsn, to) <= 0).length);
  }

  windowRows(instance: string, from: Buffer, to: Buffer, limit: number) {
    return this.run('windowRows', () => {
      const i = this.m.instance(instance);
      if (i === undefined) throw driverError('RequestError', 'EREQUEST', `Invalid object name 'cdc.${instance}_CT'.`, 208);
      let rows = 0;
      let last: Buffer | null = null;
      for (const r of i.changes) {
        if (rows >= limit) break;
        if (compareLsn(r.__$start_lsn, from) < 0 || compareLsn(r.__$start_lsn, to) > 0) continue;
        rows++;
        last = Buffer.from(r.__$start_lsn);
      }
      return { rows, last };
    });
  }

  changes(instance: CaptureInstance, from: Buffer, to: Buffer, options: ChangeReadOptions): Readable {
    const m = this.m;
    const direct = options.mode === 'direct';
    const ordered = (i: ModelInstance) => (direct ? i.changes : [...i.changes].sort((a, b) => compareLsn(a.__$start_lsn, b.__$start_lsn) || compareLsn(a.__$seqval, b.__$seqval) || a.__$operation - b.__$operation));
    return this.stream(
      'changes',
      function* () {
        const i = m.instance(instance.name);
        if (i === undefined) throw driverError('RequestError', 'EREQUEST', direct ? `Invalid object name 'cdc.${instance.name}_CT'.` : `Invalid object name 'cdc.fn_cdc_get_all_changes_${instance.name}'.`, 208);
        const max = m.maxLsnBuffer;
        // The function checks its range; a plain SELECT on the change table does not.
        if (!direct && (max === null || i.startLsn === null || compareLsn(from, i.startLsn) < 0 || compareLsn(to, max) > 0 || compareLsn(from, to) > 0)) {
          throw driverError('RequestError', 'EREQUEST', `An insufficient number of arguments were supplied for the procedure or function cdc.fn_cdc_get_all_changes_${instance.name}.`, 313);
        }
        for (const r of ordered(i)) {
          if (compareLsn(r.__$start_lsn, from) < 0) continue;
          if (compareLsn(r.__$start_lsn, to) > 0) break;
          if (r.__$operation === 3 && !options.updateOld) continue;
          const row: Row = { ...r };
          if (!direct) delete row.__$command_id; // the change function has no __$command_id
          yield row;
        }
      },
      direct ? 0 : m.sortMsPerRow,
    );
  }

  snapshot(table: TableRef, columns: readonly ColumnInfo[], orderBy: readonly string[]): Readable {
    const t = this.m.tables.get(tableKey(table));
    return this.stream('snapshot', function* () {
      if (t === undefined) throw driverError('RequestError', 'EREQUEST', `Invalid object name '${tableKey(table)}'.`, 208);
      const rows = [...t.rows.values()];
      // Without ORDER BY, SQL Server promises no order: the model returns insertion order reversed.
      if (orderBy.length === 0) rows.reverse();
      else {
        rows.sort((a, b) => {
          for (const k of orderBy) {
            const x = a[k] as number | string;
            const y = b[k] as number | string;
            if (x !== y) return x < y ? -1 : 1;
          }
          return 0;
        });
      }
      for (const r of rows) yield Object.fromEntries(columns.map((c) => [c.name, r[c.name] ?? null]));
    });
  }

  enableDatabase(task: string) {
    return this.run('enableDatabase', () => {
      this.m.cdcEnabled = true;
      this.m.marks.database = task;
    });
  }

  enableTable(t: TableRef, task: string) {
    return this.run('enableTable', () => {
      this.m.enableTable(tableKey(t));
      this.m.marks.tables.set(tableKey(t), task);
    });
  }

  disableTable(t: TableRef) {
    return this.run('disableTable', () => {
      for (const i of this.m.captureInstances().filter((x) => x.schema === t.schema && x.table === t.table)) this.m.disableInstance(i.name);
      this.m.marks.tables.delete(tableKey(t));
    });
  }

  disableDatabase() {
    return this.run('disableDatabase', () => {
      for (const i of this.m.captureInstances()) this.m.disableInstance(i.name);
      this.m.cdcEnabled = false;
      this.m.marks.database = null;
      this.m.marks.tables.clear();
    });
  }

  marks() {
    return this.run('marks', () => ({ database: this.m.marks.database, tables: new Map(this.m.marks.tables) }));
  }

  private cpTable(t: TableRef) {
    const rows = this.m.checkpointTables.get(tableKey(t));
    if (rows === undefined) throw driverError('RequestError', 'EREQUEST', `Invalid object name '${tableKey(t)}'.`, 208);
    return rows;
  }

  checkpointTableExists(t: TableRef) {
    return this.run('checkpointTableExists', () => this.m.checkpointTables.has(tableKey(t)));
  }

  createCheckpointTable(t: TableRef) {
    return this.run('createCheckpointTable', () => {
      if (!this.m.checkpointTables.has(tableKey(t))) this.m.checkpointTables.set(tableKey(t), new Map());
    });
  }

  dropCheckpointTable(t: TableRef) {
    return this.run('dropCheckpointTable', () => void this.m.checkpointTables.delete(tableKey(t)));
  }

  loadCheckpoints(t: TableRef, task: string): Promise<CheckpointRow[]> {
    return this.run('loadCheckpoints', () =>
      [...this.cpTable(t).values()].filter((r) => r.task === task).map((r) => ({ table: r.table, lsn: r.lsn && Buffer.from(r.lsn), position: r.position, source: r.source, savedAt: r.savedAt })),
    );
  }

  saveCheckpoints(t: TableRef, task: string, source: string | null, rows: Array<{ table: string; lsn: string | null; position: string | null }>) {
    return this.run('saveCheckpoints', () => {
      const table = this.cpTable(t);
      for (const r of rows) {
        const lsn = r.lsn === null ? null : Buffer.from(r.lsn.slice(2), 'hex');
        const key = `${task}\u0000${r.table}`;
        const old = table.get(key);
        // MERGE ... WHEN MATCHED AND src.lsn >= target.lsn: a table's LSN never moves back.
        if (old && lsn && old.lsn && compareLsn(lsn, old.lsn) < 0) continue;
        table.set(key, { task, table: r.table, lsn, position: r.position, source, savedAt: new Date().toISOString() });
      }
    });
  }

  deleteCheckpoints(t: TableRef, task: string) {
    return this.run('deleteCheckpoints', () => {
      const table = this.cpTable(t);
      let n = 0;
      for (const [k, r] of table) if (r.task === task) table.delete(k), n++;
      return n;
    });
  }

  checkpointRowCount(t: TableRef) {
    return this.run('checkpointRowCount', () => this.cpTable(t).size);
  }

  tryLock(resource: string) {
    return this.run('tryLock', () => {
      const owner = this.m.locks.get(resource);
      if (owner !== undefined && owner !== this.id) return false;
      this.m.locks.set(resource, this.id);
      return true;
    });
  }

  holdsLock(resource: string) {
    return this.run('holdsLock', () => this.m.locks.get(resource) === this.id);
  }


  async close() {
    if (this.closed) return;
    this.closed = true;
    for (const [resource, owner] of this.m.locks) if (owner === this.id) this.m.locks.delete(resource);
    for (const s of this.streams) s.destroy();
    this.m.sessions.delete(this);
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
