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
 */
import { Readable } from 'node:stream';
import { compareLsn, incrementLsn, lsnOf, lsnToHex } from '../../lib/sources/mssql/lsn.js';
import type { CaptureInstance, CdcConnector, CdcQueries, CheckpointRow, ConnectOptions, DriverChangeRow, Marks, TableColumns } from '../../lib/sources/mssql/queries.js';
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
  startLsn: Buffer;
  createDate: string;
  columns: ColumnInfo[];
  changes: DriverChangeRow[];
}

interface Change {
  table: string;
  op: 'insert' | 'update' | 'delete';
  row: Row;
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
    const instance: ModelInstance = {
      name: instanceName ?? `${t.schema}_${t.table}${own.length > 0 ? '_v2' : ''}`,
      table: t,
      startLsn: incrementLsn(lsnOf(this.lsnCounter)),
      createDate: new Date(this.clock + this.tx).toISOString().slice(0, 23),
      columns: t.columns.map((c) => ({ name: c.name, type: c.type })),
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
    const lsn = this.newLsn();
    this.tx++;
    const commitTime = new Date(this.clock + this.tx * 1000).toISOString().slice(0, 23);
    const captured: Array<{ instance: ModelInstance; row: DriverChangeRow }> = [];
    let seq = 0;
    for (const c of changes) {
      const t = this.table(c.table);
      const pk = t.primaryKey.map((k) => String(c.row[k])).join('|');
      const before = t.rows.get(pk);
      seq++;
      const seqval = lsnOf(this.lsnCounter * 0x10000n + BigInt(seq));
      const record = (op: number, image: Row) => {
        for (const i of this.instances) {
          if (i.table !== t || compareLsn(lsn, i.startLsn) < 0) continue;
          const row: DriverChangeRow = { __$start_lsn: lsn, __$seqval: seqval, __$operation: op };
          for (const col of i.columns) row[col.name] = image[col.name] ?? null;
          captured.push({ instance: i, row });
        }
      };
      if (c.op === 'insert') {
        if (before) throw new Error(`model: duplicate key ${pk} in ${tableKey(t)}`);
        const full = Object.fromEntries(t.columns.map((col) => [col.name, c.row[col.name] ?? null]));
        t.rows.set(pk, full);
        record(2, full);
      } else if (c.op === 'update') {
        if (!before) throw new Error(`model: no row ${pk} in ${tableKey(t)}`);
        const after = { ...before, ...c.row };
        t.rows.set(pk, after);
        record(3, before);
        record(4, after);
      } else {
        if (!before) throw new Error(`model: no row ${pk} in ${tableKey(t)}`);
        t.rows.delete(pk);
        record(1, before);
      }
    }
    this.lsnTimeMapping.push({ lsn, commitTime, tranId: this.tx });
    this.pending.push({ lsn, changes: captured });
    if (this.agent !== 'stopped') this.runCapture();
    return lsnToHex(lsn);
  }

  /** An lsn_time_mapping entry without changes, as SQL Server logs in quiet periods. */
  tick(): string {
    const lsn = this.newLsn();
    this.lsnTimeMapping.push({ lsn, commitTime: new Date(this.clock + ++this.tx * 1000).toISOString().slice(0, 23), tranId: 0 });
    this.pending.push({ lsn, changes: [] });
    if (this.agent !== 'stopped') this.runCapture();
    return lsnToHex(lsn);
  }

  /** The capture job: moves logged changes into the change tables and max LSN forward. */
  runCapture(): void {
    for (const p of this.pending) {
      for (const { instance, row } of p.changes) instance.changes.push(row);
      this.maxCaptured = p.lsn;
    }
    this.pending = [];
  }

  /** The cleanup job: removes changes below `lowWatermark` (hex) and raises each instance's start. */
  cleanup(lowWatermark: string): void {
    const low = Buffer.from(lowWatermark.slice(2), 'hex');
    for (const i of this.instances) {
      i.changes = i.changes.filter((r) => compareLsn(r.__$start_lsn, low) >= 0);
      if (compareLsn(i.startLsn, low) < 0) i.startLsn = low;
    }
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
    return this.instances.map((i) => ({ name: i.name, schema: i.table.schema, table: i.table.table, startLsn: Buffer.from(i.startLsn), createDate: i.createDate, columns: i.columns.map((c) => ({ ...c })) }));
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
    readonly id: number,
    readonly options: ConnectOptions,
  ) {
    this.where = m.where;
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

  private stream(name: string, rows: () => Iterable<Row>): Readable {
    const m = this.m;
    const self = this;
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
      return i === undefined ? Buffer.alloc(10) : Buffer.from(i.startLsn);
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

  hasChanges(instance: string, from: Buffer, to: Buffer) {
    return this.run('hasChanges', () => {
      const i = this.m.instance(instance);
      if (i === undefined) throw driverError('RequestError', 'EREQUEST', `Invalid object name 'cdc.${instance}_CT'.`, 208);
      return i.changes.some((r) => compareLsn(r.__$start_lsn, from) >= 0 && compareLsn(r.__$start_lsn, to) <= 0);
    });
  }

  changes(instance: CaptureInstance, from: Buffer, to: Buffer, updateOld: boolean): Readable {
    const m = this.m;
    return this.stream('changes', function* () {
      const i = m.instance(instance.name);
      const max = m.maxLsnBuffer;
      if (i === undefined || max === null || compareLsn(from, i.startLsn) < 0 || compareLsn(to, max) > 0 || compareLsn(from, to) > 0) {
        throw driverError('RequestError', 'EREQUEST', `An insufficient number of arguments were supplied for the procedure or function cdc.fn_cdc_get_all_changes_${instance.name}.`, 313);
      }
      for (const r of i.changes) {
        if (compareLsn(r.__$start_lsn, from) < 0) continue;
        if (compareLsn(r.__$start_lsn, to) > 0) break;
        if (r.__$operation === 3 && !updateOld) continue;
        yield { ...r };
      }
    });
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
