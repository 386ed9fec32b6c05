/**
 * CdcQueries over the `mssql` driver (tedious): the statements of sql.ts, parameters bound by type.
 * The driver is loaded on first connect, so commands that never reach SQL Server do not pay for it.
 */
import type { Readable } from 'node:stream';
import type mssqlModule from 'mssql';
import type { CaptureInstance, CdcConnector, CdcQueries, ChangeReadOptions, CheckpointRow, ConnectOptions, RowRange, SnapshotChunk, TableColumns } from './queries.js';
import { loadTedious, streamRows, type TdsParam, type TediousModule } from './row-stream.js';
import { SQL } from './sql.js';
import { tableKey, type TableRef } from './tables.js';
import type { ColumnInfo } from './types.js';

type Mssql = typeof mssqlModule;
type Params = Record<string, [mssqlModule.ISqlType | (() => mssqlModule.ISqlType), unknown]>;

let mssql: Mssql;
let tds: TediousModule;
const qualified = (t: TableRef) => `[${t.schema.replace(/]/g, ']]')}].[${t.table.replace(/]/g, ']]')}]`;
const lsnParam = (v: Buffer): [mssqlModule.ISqlType, Buffer] => [mssql.VarBinary(10), v];

/**
 * The parameter for a key value as a snapshot row carries it (sql.ts selectExpression), so that
 * SQL Server converts the parameter to the column's type, never the column (which would change
 * the order, or the collation, and lose the seek): numbers, bits and bytes as the column's own
 * type; exact numbers, dates and times as their text, which SQL Server converts to the column's
 * type; strings as varchar or nvarchar like the column.
 */
function keyParam(sqlType: string, value: unknown): TdsParam {
  const T = tds.TYPES;
  switch (sqlType.toLowerCase()) {
    case 'tinyint':
      return [T.TinyInt, value];
    case 'smallint':
      return [T.SmallInt, value];
    case 'int':
      return [T.Int, value];
    case 'bigint':
      return [T.BigInt, value];
    case 'real':
      return [T.Real, value];
    case 'float':
      return [T.Float, value];
    case 'bit':
      return [T.Bit, value];
    case 'uniqueidentifier':
      return [T.UniqueIdentifier, value];
    case 'char':
    case 'varchar':
      return [T.VarChar, value, 8000];
    case 'binary':
    case 'varbinary':
    case 'timestamp':
    case 'rowversion':
      return [T.VarBinary, value, 8000];
    default:
      return [T.NVarChar, value, 4000];
  }
}

/**
 * `host:port/database` of an ADO-style connection string, for messages: only the Server (Data
 * Source, Address) and Database (Initial Catalog) keys are read; no user, no password.
 */
export function describeConnection(connectionString: string): string {
  const keys = new Map<string, string>();
  for (const part of connectionString.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) keys.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
  }
  const server = keys.get('server') ?? keys.get('data source') ?? keys.get('address') ?? keys.get('addr') ?? keys.get('network address');
  if (server === undefined) return 'the server in the connection string (it names none: add Server=host,port)';
  const database = keys.get('database') ?? keys.get('initial catalog');
  const [hostPart, port] = server.replace(/^tcp:/i, '').split(',');
  const host = hostPart!.trim();
  const withPort = host.includes('\\') && port === undefined ? host : `${host}:${(port ?? '1433').trim()}`;
  return `${withPort}${database ? `/${database}` : ''}`;
}

/** How long a statement may take to its first row when neither the config nor the connection string says. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 120_000;

/**
 * Rows a change or snapshot stream holds before its request is paused, and where it resumes. A
 * window's change streams are merged in commit order, so one that runs dry stalls the merge
 * while the others wait: what is left at the low mark covers the time to resume the request
 * (rows already in its socket follow at once). Resuming at a quarter refills in runs, not a pause
 * and a resume for every row read. Larger buffers were measured slower: every buffered row
 * outlives the young generation's collections, so the collector copies and promotes it
 * (4,096 rows per stream doubled the collection time of a 3-table backlog and saved no wait;
 * 256 took about 4% less client CPU than 1,024 over the TDS test server's 200k-row backlog, and
 * 128 no less than 256).
 */
const STREAM_HIGH = 256;
const STREAM_LOW = 64;

/** The largest TDS packet SQL Server accepts (its `network packet size` limit), in bytes. */
export const MAX_PACKET_SIZE = 32_767;

/** A connector for one connection string. The string is only handed to the driver. */
export function sqlServerConnector(connectionString: string): CdcConnector {
  const where = describeConnection(connectionString);
  return async (options: ConnectOptions = {}) => {
    mssql ??= (await import('mssql')).default;
    tds ??= loadTedious();
    const config = mssql.ConnectionPool.parseConnectionString(connectionString);
    const max = options.single ? 1 : Math.max(2, options.maxConnections ?? 10);
    const lost = options.onSessionLost;
    const pool = new mssql.ConnectionPool({
      ...config,
      // The driver's default (15 s, counted to the first row) is short for a sorted window.
      requestTimeout: options.requestTimeoutMs ?? config.requestTimeout ?? DEFAULT_REQUEST_TIMEOUT_MS,
      // Keep connection errors as errors: no unhandled 'error' events from idle connections.
      pool: { min: options.single ? 1 : 0, max, idleTimeoutMillis: options.single ? 2 ** 31 - 1 : 30_000 },
      // A connection lent by the pool is checked by its socket, not by a SELECT 1 round trip before
      // every statement (the driver's default): a connection that broke anyway fails its statement,
      // and the reader reconnects as for any lost connection.
      validateConnection: 'socket',
      // Packets of the largest size SQL Server accepts unless the connection string says (Packet
      // Size): a change read is a long run of rows, and the driver parses a row split across two
      // packets twice.
      options: { packetSize: MAX_PACKET_SIZE, ...config.options, appName: 'dstream mssql-cdc', useUTC: true },
      // The pool replaces a dead connection without a word; a session's owner must hear of it,
      // since the session's locks died with it. A connection the server or network broke reports
      // an 'error' (one the pool closes itself, such as its first test connection, does not).
      ...(options.single && lost
        ? {
            beforeConnect: (connection: { once(event: 'connect' | 'error', listener: (err?: Error) => void): void }) =>
              connection.once('connect', (err) => {
                if (!err) connection.once('error', () => lost());
              }),
          }
        : {}),
    } as mssqlModule.config);
    pool.on('error', () => {
      // The pool reports a broken idle connection here; the next statement on it fails and the
      // reader reconnects. Nothing is lost by not acting on it twice.
    });
    await pool.connect().catch((err: Error) => {
      // Where it tried, for the message; the driver's own text never has the password.
      throw Object.assign(err, { where });
    });
    return new SqlServerQueries(pool, where);
  };
}

type InstanceRow = { capture_instance: string; schema_name: string; table_name: string; start_lsn: Buffer | null; create_date: string };
type ColumnRow = { capture_instance: string; column_name: string; column_type: string; column_ordinal: number; is_max: boolean };

/** Capture instances from cdc.change_tables rows, each with its captured columns. */
function instancesOf(instances: readonly InstanceRow[], columns: readonly ColumnRow[]): CaptureInstance[] {
  const byInstance = new Map<string, ColumnInfo[]>();
  for (const c of columns) {
    let list = byInstance.get(c.capture_instance);
    if (list === undefined) byInstance.set(c.capture_instance, (list = []));
    list.push({ name: c.column_name, type: c.column_type, ordinal: c.column_ordinal, ...(c.is_max ? { max: true } : {}) });
  }
  return instances.map((r) => ({
    name: r.capture_instance,
    schema: r.schema_name,
    table: r.table_name,
    startLsn: r.start_lsn,
    createDate: r.create_date,
    columns: byInstance.get(r.capture_instance) ?? [],
  }));
}

class SqlServerQueries implements CdcQueries {
  constructor(
    private readonly pool: mssqlModule.ConnectionPool,
    readonly where: string,
  ) {}

  private request(params: Params = {}): mssqlModule.Request {
    const req = this.pool.request();
    for (const [name, [type, value]] of Object.entries(params)) req.input(name, type, value);
    return req;
  }

  private async rows<T = Record<string, unknown>>(text: string, params?: Params): Promise<T[]> {
    const result = await this.request(params).query(text);
    return result.recordset as unknown as T[];
  }

  /**
   * The results of a batch of `statements`, one per statement in order. One missing is an error: a
   * count or a list that did not come must not read as none.
   */
  private async results(statements: readonly string[], params?: Params): Promise<Array<Array<Record<string, unknown>>>> {
    const result = await this.request(params).query(statements.join(';\n'));
    const sets = result.recordsets as unknown as Array<Array<Record<string, unknown>>>;
    if (sets.length !== statements.length) throw new Error(`a batch of ${statements.length} statements gave ${sets.length} results`);
    return sets;
  }

  /**
   * Rows as they arrive, under backpressure: up to STREAM_HIGH rows wait in the stream, then the
   * request is paused (the server's sends wait on the socket) until the reader is down to
   * STREAM_LOW. Destroyed before its end, the stream cancels the request (ATTENTION), so the
   * connection goes back to the pool at once instead of after every remaining row has been read
   * and dropped. `arrays`: each row an array of its values in select-list order, not an object
   * keyed by column name.
   */
  private stream(text: string, params: Record<string, TdsParam> = {}, arrays = false): Readable {
    return streamRows(this.pool, tds, mssql, text, params, { arrays, high: STREAM_HIGH, low: STREAM_LOW });
  }

  async databaseInfo() {
    const [r] = await this.rows<{ database_name: string; cdc_enabled: boolean }>(SQL.databaseInfo);
    return { database: r!.database_name, cdcEnabled: r!.cdc_enabled };
  }

  async agentState(): Promise<'running' | 'stopped' | 'unknown'> {
    try {
      const [r] = await this.rows<{ status_desc: string }>(SQL.agentState);
      if (r === undefined) return 'unknown';
      return /running/i.test(r.status_desc) ? 'running' : 'stopped';
    } catch (err) {
      // 297/300: no VIEW SERVER STATE; 208: the view does not exist on this platform.
      if ([208, 297, 300].includes((err as { number?: number }).number ?? 0)) return 'unknown';
      throw err;
    }
  }

  async sourceTables() {
    const rows = await this.rows<{ schema_name: string; table_name: string; tracked: boolean }>(SQL.sourceTables);
    return rows.map((r) => ({ schema: r.schema_name, table: r.table_name, tracked: r.tracked }));
  }

  /**
   * The instances and their captured columns in one batch of two statements: every window asks, and
   * a statement costs the client about a millisecond of CPU however small its answer.
   */
  async captureInstances(): Promise<CaptureInstance[]> {
    const [instances, columns] = await this.results([SQL.captureInstances, SQL.capturedColumns]);
    return instancesOf(instances as InstanceRow[], columns as ColumnRow[]);
  }

  async windowStart() {
    const [instances, columns, max] = await this.results([SQL.captureInstances, SQL.capturedColumns, SQL.maxLsn]);
    return { instances: instancesOf(instances as InstanceRow[], columns as ColumnRow[]), max: (max![0]?.lsn as Buffer | null | undefined) ?? null };
  }

  async tableColumns(): Promise<TableColumns[]> {
    const rows = await this.rows<{ schema_name: string; table_name: string; column_name: string; type_name: string; nullable: boolean; key_ordinal: number | null }>(SQL.tableColumns);
    const tables = new Map<string, TableColumns & { keys: Array<[number, string]> }>();
    for (const r of rows) {
      const key = tableKey({ schema: r.schema_name, table: r.table_name });
      let t = tables.get(key);
      if (t === undefined) tables.set(key, (t = { schema: r.schema_name, table: r.table_name, columns: [], primaryKey: [], keys: [] }));
      t.columns.push({ name: r.column_name, type: r.type_name, nullable: r.nullable });
      if (r.key_ordinal !== null) t.keys.push([r.key_ordinal, r.column_name]);
    }
    return [...tables.values()].map(({ keys, ...t }) => ({ ...t, primaryKey: keys.sort((a, b) => a[0] - b[0]).map((k) => k[1]) }));
  }

  async maxLsn() {
    const [r] = await this.rows<{ lsn: Buffer | null }>(SQL.maxLsn);
    return r?.lsn ?? null;
  }

  async minLsn(instance: string) {
    const [r] = await this.rows<{ lsn: Buffer }>(SQL.minLsn, { instance: [mssql.NVarChar(128), instance] });
    return r!.lsn;
  }

  async minLsns(instances: readonly string[]) {
    if (instances.length === 0) return [];
    const params: Params = {};
    instances.forEach((name, i) => (params[`instance${i}`] = [mssql.NVarChar(128), name]));
    const [r] = await this.rows<Record<string, Buffer>>(SQL.minLsns(instances.length), params);
    return instances.map((_, i) => r![`lsn${i}`]!);
  }

  async lsnTime(lsn: Buffer) {
    const [r] = await this.rows<{ commit_time: string | null }>(SQL.lsnTime, { lsn: lsnParam(lsn) });
    return r?.commit_time ?? null;
  }

  async windowCommits(from: Buffer, to: Buffer, limit: number) {
    const [r] = await this.rows<{ n: string | number; last: Buffer | null }>(SQL.windowCommits, { from: lsnParam(from), to: lsnParam(to), limit: [mssql.Int, limit] });
    return { commits: Number(r?.n ?? 0), last: r?.last ?? null };
  }

  async countTransactions(after: Buffer, to: Buffer) {
    const [r] = await this.rows<{ n: string | number }>(SQL.countTransactions, { after: lsnParam(after), to: lsnParam(to) });
    // COUNT_BIG arrives as a string (bigint).
    return Number(r?.n ?? 0);
  }

  async windowRows(ranges: readonly RowRange[], limit: number) {
    if (ranges.length === 0) return [];
    const params: Params = { limit: [mssql.Int, limit] };
    ranges.forEach((range, i) => {
      params[`from${i}`] = lsnParam(range.from);
      params[`to${i}`] = lsnParam(range.to);
    });
    const sets = await this.results(SQL.windowRows(ranges.map((range) => range.instance)), params);
    return sets.map((set, i) => {
      // An aggregate answers one row whatever it counts: none would read as an idle table, and skip its rows.
      const r = set[0] as { n: string | number; last: Buffer | null } | undefined;
      if (r === undefined) throw new Error(`the row count of capture instance ${ranges[i]!.instance} came empty`);
      return { rows: Number(r.n), last: r.last };
    });
  }

  changes(instance: CaptureInstance, from: Buffer, to: Buffer, options: ChangeReadOptions): Readable {
    const text = options.mode === 'direct' ? SQL.changeTable(instance.name, instance.columns, options.updateOld) : SQL.changes(instance.name, instance.columns, options.updateOld);
    return this.stream(text, { from: [tds.TYPES.VarBinary, from, 10], to: [tds.TYPES.VarBinary, to, 10] }, true);
  }

  snapshot(table: TableRef, columns: readonly ColumnInfo[], orderBy: readonly string[], chunk?: SnapshotChunk): Readable {
    if (chunk === undefined) return this.stream(SQL.snapshot(table, columns, orderBy));
    const params: Record<string, TdsParam> = { limit: [tds.TYPES.Int, chunk.limit] };
    chunk.after?.forEach((value, i) => {
      const column = columns.find((c) => c.name === orderBy[i]);
      params[`k${i}`] = keyParam(column?.type ?? '', value);
    });
    return this.stream(SQL.snapshot(table, columns, orderBy, { after: chunk.after !== undefined }), params);
  }

  async enableDatabase(task: string) {
    await this.rows(SQL.enableDatabase);
    await this.rows(SQL.markDatabase, { task: [mssql.NVarChar(400), task] });
  }

  async enableTable(t: TableRef, task: string) {
    const p: Params = { schema: [mssql.NVarChar(128), t.schema], table: [mssql.NVarChar(128), t.table], task: [mssql.NVarChar(400), task] };
    await this.rows(SQL.enableTable, p);
    await this.rows(SQL.markTable, p);
  }

  async disableTable(t: TableRef) {
    const p: Params = { schema: [mssql.NVarChar(128), t.schema], table: [mssql.NVarChar(128), t.table] };
    await this.rows(SQL.disableTable, p);
    await this.rows(SQL.unmarkTable, p);
  }

  async unmarkTable(t: TableRef) {
    await this.rows(SQL.unmarkTable, { schema: [mssql.NVarChar(128), t.schema], table: [mssql.NVarChar(128), t.table] });
  }

  async disableDatabase() {
    await this.rows(SQL.unmarkDatabase);
    await this.rows(SQL.disableDatabase);
  }

  async marks() {
    const rows = await this.rows<{ schema_name: string | null; table_name: string | null; task: string }>(SQL.marks);
    const out = { database: null as string | null, tables: new Map<string, string>() };
    for (const r of rows) {
      if (r.table_name === null) out.database = r.task;
      else out.tables.set(tableKey({ schema: r.schema_name!, table: r.table_name }), r.task);
    }
    return out;
  }

  async checkpointTableExists(t: TableRef) {
    const [r] = await this.rows<{ found: number }>(SQL.checkpointTableExists, { qualified: [mssql.NVarChar(300), qualified(t)] });
    return r?.found === 1;
  }

  async createCheckpointTable(t: TableRef) {
    await this.rows(SQL.createCheckpointSchema, { schema: [mssql.NVarChar(128), t.schema] });
    await this.rows(SQL.createCheckpointTable(t), { qualified: [mssql.NVarChar(300), qualified(t)] });
  }

  async dropCheckpointTable(t: TableRef) {
    await this.rows(SQL.dropCheckpointTable(t));
  }

  async loadCheckpoints(t: TableRef, task: string): Promise<CheckpointRow[]> {
    const rows = await this.rows<{ table_name: string; lsn: Buffer | null; position: string | null; source: string | null; saved_at: string | null }>(SQL.loadCheckpoints(t), {
      task: [mssql.NVarChar(200), task],
    });
    return rows.map((r) => ({ table: r.table_name, lsn: r.lsn, position: r.position, source: r.source, savedAt: r.saved_at }));
  }

  async saveCheckpoints(t: TableRef, task: string, source: string | null, rows: Array<{ table: string; lsn: string | null; position: string | null; snapshotLsn?: string }>) {
    await this.rows(SQL.saveCheckpoints(t), {
      task: [mssql.NVarChar(200), task],
      source: [mssql.NVarChar(200), source],
      rows: [mssql.NVarChar(mssql.MAX), JSON.stringify(rows)],
    });
  }

  async deleteCheckpoints(t: TableRef, task: string) {
    const result = await this.request({ task: [mssql.NVarChar(200), task] }).query(SQL.deleteCheckpoints(t));
    return result.rowsAffected[0] ?? 0;
  }

  async checkpointRowCount(t: TableRef) {
    const [r] = await this.rows<{ n: number }>(SQL.checkpointRowCount(t));
    return r?.n ?? 0;
  }

  async tryLock(resource: string) {
    const [r] = await this.rows<{ result: number }>(SQL.tryLock, { resource: [mssql.NVarChar(255), resource] });
    return (r?.result ?? -1) >= 0;
  }

  async holdsLock(resource: string) {
    const [r] = await this.rows<{ mode: string }>(SQL.holdsLock, { resource: [mssql.NVarChar(255), resource] });
    return r?.mode === 'Exclusive';
  }


  async close() {
    await this.pool.close();
  }
}

