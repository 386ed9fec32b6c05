/**
 * The T-SQL front of the CDC model: what a database with change data capture answers through the
 * TDS test server. The catalog views (sys.databases, sys.tables, sys.schemas, sys.columns, sys.types,
 * sys.indexes, sys.index_columns, sys.extended_properties, sys.dm_server_services), the CDC tables
 * and functions (cdc.change_tables, cdc.captured_columns, cdc.lsn_time_mapping, cdc.<instance>_CT,
 * cdc.fn_cdc_get_all_changes_<instance>, sys.fn_cdc_get_max_lsn/min_lsn/increment_lsn/map_lsn_to_time),
 * the built-ins (DB_NAME, DB_ID, OBJECT_ID, SCHEMA_ID, QUOTENAME, SYSUTCDATETIME, APPLOCK_MODE) and the
 * procedures (sys.sp_cdc_enable_db/disable_db/enable_table/disable_table, sp_addextendedproperty,
 * sp_dropextendedproperty, sp_getapplock, sp_releaseapplock) are declared here with the types SQL
 * Server documents for them. Adding one is adding an entry to VIEWS, SCALARS or PROCEDURES.
 */
import { incrementLsn } from '../../../lib/sources/mssql/lsn.js';
import { compareLsn, firstAtOrAfter, indexAfter, type CdcModel, type ModelInstance, type ModelTable } from '../cdc-model.js';
import { Batch, type Catalog, type Relation, type Row, type ScalarFunction, type SeekBound, type WritableTable } from './engine.js';
import { tokenize } from './tsql.js';
import { SqlServerError, type BatchOutput, type ColumnDef, type ExecuteContext, type Param, type SessionInfo, type SqlType, type SqlValue, type TdsBackend } from './types.js';

const T = {
  int: { name: 'int' } as SqlType,
  bigint: { name: 'bigint' } as SqlType,
  tinyint: { name: 'tinyint' } as SqlType,
  smallint: { name: 'smallint' } as SqlType,
  bit: { name: 'bit' } as SqlType,
  sysname: { name: 'nvarchar', length: 128 } as SqlType,
  lsn: { name: 'binary', length: 10 } as SqlType,
  datetime: { name: 'datetime' } as SqlType,
  nvarchar: (length: number | 'max'): SqlType => ({ name: 'nvarchar', length }),
};

/** sys.databases.database_id of the model's database (master is 1). */
const DATABASE_ID = 5;

const col = (name: string, type: SqlType, nullable = false): ColumnDef => ({ name, type, nullable });

/** sys.types: name -> system_type_id (= user_type_id for system types). */
const TYPE_IDS: Record<string, number> = {
  image: 34, text: 35, uniqueidentifier: 36, date: 40, time: 41, datetime2: 42, datetimeoffset: 43, tinyint: 48, smallint: 52, int: 56,
  smalldatetime: 58, real: 59, money: 60, datetime: 61, float: 62, sql_variant: 98, ntext: 99, bit: 104, decimal: 106, numeric: 108,
  smallmoney: 122, bigint: 127, hierarchyid: 240, geometry: 240, geography: 240, varbinary: 165, varchar: 167, binary: 173, char: 175,
  timestamp: 189, nvarchar: 231, nchar: 239, xml: 241, sysname: 231,
};
const CLR_USER_TYPE_IDS: Record<string, number> = { hierarchyid: 128, geometry: 129, geography: 130 };

/** The declared type of a model column as its result column: character types get a length. */
function declaredType(c: { type: string; sqlType?: SqlType }): SqlType {
  if (c.sqlType) return c.sqlType;
  const name = c.type.toLowerCase();
  switch (name) {
    case 'nvarchar':
    case 'nchar':
      return { name, length: 4000 };
    case 'varchar':
    case 'char':
      return { name, length: 8000 };
    case 'varbinary':
    case 'binary':
      return { name, length: 8000 };
    case 'decimal':
    case 'numeric':
      return { name, precision: 38, scale: 4 };
    case 'datetime2':
    case 'time':
    case 'datetimeoffset':
      return { name, scale: 7 };
    case 'bit': case 'tinyint': case 'smallint': case 'int': case 'bigint': case 'float': case 'real': case 'money': case 'date': case 'datetime': case 'uniqueidentifier':
      return { name };
    default:
      // xml, sql_variant, CLR types: their text
      return { name: 'nvarchar', length: 'max' };
  }
}

const isoDate = (text: string) => new Date(/[zZ]$/.test(text) ? text : `${text}Z`);

/** Where a mapping entry keeps its row. */
const MAPPING_ROW = Symbol('cdc.lsn_time_mapping row');
/** A cdc.lsn_time_mapping row, built once per entry (an entry does not change once committed; rows are only read). */
function mappingRow(e: { lsn: Buffer; commitTime: string; tranId: number; [MAPPING_ROW]?: Row }): Row {
  let row = e[MAPPING_ROW];
  if (row === undefined) {
    const time = isoDate(e.commitTime);
    row = [e.lsn, time, time, e.tranId === 0 ? Buffer.from([0]) : tranIdBytes(e.tranId), e.lsn];
    e[MAPPING_ROW] = row;
  }
  return row;
}
/** A transaction id as tran_id's 10 bytes, big-endian. */
function tranIdBytes(id: number): Buffer {
  const out = Buffer.alloc(10);
  let v = id;
  for (let i = 9; i >= 0 && v > 0; i--) {
    out[i] = v % 256;
    v = Math.floor(v / 256);
  }
  return out;
}
const lower = (parts: string[]) => parts.map((p) => p.toLowerCase());

/** Splits `[a].[b]` or `a.b` (an OBJECT_ID argument) into its parts; null when it is not a name. */
function parseObjectName(text: string): string[] | null {
  try {
    const toks = tokenize(text);
    const parts: string[] = [];
    for (let i = 0; i < toks.length; i++) {
      const t = toks[i]!;
      if (i % 2 === 0 && t.t === 'id') parts.push(t.v);
      else if (i % 2 === 1 && t.t === 'op' && t.v === '.') continue;
      else return null;
    }
    return parts.length > 0 && parts.length <= 3 ? parts : null;
  } catch {
    return null;
  }
}

export class CdcBackend implements TdsBackend {
  constructor(readonly model: CdcModel) {}

  login(user: string, password: string, database: string | undefined): { database: string } {
    const m = this.model;
    m.count('login');
    if (m.loginFails || m.logins.get(user) !== password) throw new SqlServerError(18456, `Login failed for user '${user}'.`, 14, 1);
    if (database !== undefined && database !== '' && database.toLowerCase() !== m.database.toLowerCase() && database.toLowerCase() !== 'master') {
      throw new SqlServerError(4060, `Cannot open database "${database}" requested by the login. The login failed.`, 11);
    }
    return { database: database || m.database };
  }

  async *execute(sql: string, params: Param[], ctx: ExecuteContext): AsyncGenerator<BatchOutput> {
    // Requests (a batch or an RPC, however many statements) counted for tests of what goes in one.
    this.model.count('request');
    // Counted for tests of cancel: the client sent ATTENTION while this request ran.
    const attention = () => (ctx.signal.reason as Error | undefined)?.message === 'attention' && this.model.count('attention');
    ctx.signal.addEventListener('abort', attention, { once: true });
    try {
      if (this.model.latencyMs > 0) await new Promise((r) => setTimeout(r, this.model.latencyMs));
      const catalog = new SessionCatalog(this.model, ctx.session);
      for await (const out of new Batch(catalog, params, ctx).run(sql)) {
        yield 'rows' in out && this.model.sortMsPerRow > 0 ? { columns: out.columns, rows: afterSort(out.rows, catalog, this.model.sortMsPerRow, ctx.signal) } : out;
      }
    } finally {
      ctx.signal.removeEventListener('abort', attention);
    }
  }

  sessionClosed(session: SessionInfo): void {
    this.model.releaseLocks(session.id);
  }
}

/**
 * A result whose first row waits for the sort of every change function row it read (sortMsPerRow
 * each); an ATTENTION (the client's cancel or request timeout) ends the wait and the result.
 */
async function* afterSort(rows: Iterable<SqlValue[]> | AsyncIterable<SqlValue[]>, catalog: SessionCatalog, msPerRow: number, signal: AbortSignal): AsyncGenerator<SqlValue[]> {
  const all: SqlValue[][] = [];
  for await (const r of rows) all.push(r);
  const ms = catalog.sortedRows * msPerRow;
  if (ms > 0 && !signal.aborted) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      }
      signal.addEventListener('abort', done, { once: true });
    });
  }
  if (signal.aborted) return;
  yield* all;
}

type ViewFactory = (
  m: CdcModel,
  s: SessionInfo,
) => { columns: ColumnDef[]; rows: () => Iterable<Row>; orderedBy?: string[]; seek?: Relation['seek']; get?: Relation['get']; scanKeys?: Relation['scanKeys'] };

/** Catalog views and CDC tables by 'schema.name'. */
const VIEWS: Record<string, ViewFactory> = {
  'sys.databases': (m) => ({
    columns: [col('name', T.sysname), col('database_id', T.int), col('is_cdc_enabled', T.bit)],
    rows: () => [
      ['master', 1, false],
      [m.database, DATABASE_ID, m.cdcEnabled],
    ],
  }),
  'sys.dm_server_services': (m) => {
    // Needs VIEW SERVER STATE (error 300 without it).
    if (m.agent === 'unknown') throw new SqlServerError(300, "VIEW SERVER STATE permission was denied on object 'server', database 'master'.", 14);
    return {
      columns: [col('servicename', T.nvarchar(256)), col('status_desc', T.nvarchar(256), true), col('startup_type_desc', T.nvarchar(256), true)],
      rows: () => [
        ['SQL Server (MSSQLSERVER)', 'Running', 'Automatic'],
        ['SQL Server Agent (MSSQLSERVER)', m.agent === 'running' ? 'Running' : 'Stopped', 'Manual'],
      ],
    };
  },
  'sys.schemas': (m) => ({
    columns: [col('name', T.sysname), col('schema_id', T.int), col('principal_id', T.int, true)],
    rows: () => [...m.schemas].map(([name, id]) => [name, id, 1]),
  }),
  'sys.tables': (m) => ({
    columns: [col('name', T.sysname), col('object_id', T.int), col('schema_id', T.int), col('type', { name: 'char', length: 2 }), col('is_ms_shipped', T.bit), col('is_tracked_by_cdc', T.bit, true)],
    rows: () => [...m.tables.values()].map((t) => [t.table, t.objectId, m.schemas.get(t.schema)!, 'U ', false, t.tracked]),
  }),
  'sys.columns': (m) => ({
    columns: [col('object_id', T.int), col('name', T.sysname, true), col('column_id', T.int), col('system_type_id', T.tinyint), col('user_type_id', T.int), col('max_length', T.smallint), col('is_nullable', T.bit, true)],
    rows: () =>
      [...m.tables.values()].flatMap((t) =>
        t.columns.map((c, i) => {
          const type = c.sqlType?.name ?? c.type.toLowerCase();
          const system = TYPE_IDS[type] ?? 231;
          // -1 for the (max) types and xml; 16 (a text pointer) for text, ntext, image.
          const maxLength = c.max || c.sqlType?.length === 'max' || type === 'xml' ? -1 : ['text', 'ntext', 'image'].includes(type) ? 16 : 8000;
          return [t.objectId, c.name, i + 1, system, CLR_USER_TYPE_IDS[type] ?? system, maxLength, c.nullable];
        }),
      ),
  }),
  'sys.types': () => ({
    columns: [col('name', T.sysname), col('system_type_id', T.tinyint), col('user_type_id', T.int), col('is_user_defined', T.bit)],
    rows: () => Object.entries(TYPE_IDS).map(([name, id]) => [name, id, CLR_USER_TYPE_IDS[name] ?? (name === 'sysname' ? 256 : id), false]),
  }),
  'sys.indexes': (m) => ({
    columns: [col('object_id', T.int), col('name', T.sysname, true), col('index_id', T.int), col('is_primary_key', T.bit, true)],
    rows: () => [...m.tables.values()].filter((t) => t.primaryKey.length > 0).map((t) => [t.objectId, `PK_${t.table}`, 1, true]),
  }),
  'sys.index_columns': (m) => ({
    columns: [col('object_id', T.int), col('index_id', T.int), col('index_column_id', T.int), col('column_id', T.int), col('key_ordinal', T.tinyint)],
    rows: () =>
      [...m.tables.values()].flatMap((t) =>
        t.primaryKey.map((k, i) => [t.objectId, 1, i + 1, t.columns.findIndex((c) => c.name.toLowerCase() === k.toLowerCase()) + 1, i + 1]),
      ),
  }),
  'sys.extended_properties': (m) => ({
    columns: [col('class', T.tinyint), col('class_desc', T.nvarchar(60), true), col('major_id', T.int), col('minor_id', T.int), col('name', T.sysname), col('value', T.nvarchar(4000), true)],
    rows: () => m.extendedProperties.map((p) => [p.class, p.class === 0 ? 'DATABASE' : 'OBJECT_OR_COLUMN', p.majorId, 0, p.name, p.value]),
  }),
  'cdc.change_tables': (m) => ({
    columns: [
      col('object_id', T.int),
      col('version', T.int, true),
      col('source_object_id', T.int, true),
      col('capture_instance', T.sysname),
      col('start_lsn', T.lsn, true),
      col('end_lsn', T.lsn, true),
      col('supports_net_changes', T.bit, true),
      col('has_drop_pending', T.bit, true),
      col('role_name', T.sysname, true),
      col('index_name', T.sysname, true),
      col('filegroup_name', T.sysname, true),
      col('create_date', T.datetime, true),
      col('partition_switch', T.bit),
    ],
    rows: () => m.instances.map((i) => [i.objectId, 0, i.table.objectId, i.name, i.startLsn && Buffer.from(i.startLsn), null, false, null, null, `PK_${i.table.table}`, null, isoDate(i.createDate), false]),
  }),
  'cdc.captured_columns': (m) => ({
    columns: [col('object_id', T.int), col('column_name', T.sysname), col('column_id', T.int, true), col('column_type', T.sysname), col('column_ordinal', T.int), col('is_computed', T.bit, true)],
    rows: () => m.instances.flatMap((i) => i.columns.map((c, n) => [i.objectId, c.name, i.table.columns.findIndex((x) => x.name === c.name) + 1, c.type, n + 1, false])),
  }),
  'cdc.lsn_time_mapping': (m) => {
    const mapping = function* (lo?: SeekBound, hi?: SeekBound): Generator<Row> {
      const from = lo?.value;
      for (const e of m.visibleMapping(Buffer.isBuffer(from) ? from : undefined, lo?.inclusive ?? true)) {
        if (hi && Buffer.isBuffer(hi.value) && compareLsn(e.lsn, hi.value) > (hi.inclusive ? 0 : -1)) return;
        yield mappingRow(e);
      }
    };
    return {
      columns: [col('start_lsn', T.lsn), col('tran_begin_time', T.datetime, true), col('tran_end_time', T.datetime, true), col('tran_id', { name: 'varbinary', length: 10 }, true), col('tran_begin_lsn', T.lsn, true)],
      rows: () => mapping(),
      orderedBy: ['start_lsn'],
      seek: mapping,
      // start_lsn is the unique clustered key.
      get: (key) => {
        const e = Buffer.isBuffer(key) ? m.mappingEntry(key) : undefined;
        return e === undefined ? undefined : mappingRow(e);
      },
      // The clustered index's keys alone (a count of commits): the entries' LSNs, no row built.
      scanKeys: (lo, hi, visit) =>
        m.visibleMappingLsns(
          Buffer.isBuffer(lo?.value) ? { lsn: lo.value, inclusive: lo.inclusive } : undefined,
          hi && Buffer.isBuffer(hi.value) ? { lsn: hi.value, inclusive: hi.inclusive } : undefined,
          visit,
        ),
    };
  },
};

/** Columns of a change table / change function row for an instance. */
function changeColumns(i: ModelInstance, table: boolean): ColumnDef[] {
  const captured = i.columns.map((c) => {
    const source = i.table.columns.find((x) => x.name === c.name);
    return col(c.name, declaredType(source ?? c), true);
  });
  const head = table
    ? [col('__$start_lsn', T.lsn), col('__$end_lsn', T.lsn, true), col('__$seqval', T.lsn), col('__$operation', T.int), col('__$update_mask', { name: 'varbinary', length: 128 }, true)]
    : [col('__$start_lsn', T.lsn), col('__$seqval', T.lsn), col('__$operation', T.int), col('__$update_mask', { name: 'varbinary', length: 128 }, true)];
  return [...head, ...captured, ...(table ? [col('__$command_id', T.int, true)] : [])];
}

/** Row readers of each capture instance's change rows, by the columns read. */
const rowReaders = new WeakMap<ModelInstance, Map<string, (r: Record<string, unknown>) => Row>>();

/**
 * A change row (a record) as a change table row: the `used` columns by name, the rest NULL, as is a
 * column the row does not carry (__$end_lsn). Generated once per instance and set of columns, so
 * each reader reads its own properties by name: one loop over every instance's names would make
 * each read a megamorphic keyed load, several times the cost of the rest of the row.
 */
function rowReader(i: ModelInstance, names: string[], used: ReadonlySet<number> | undefined): (r: Record<string, unknown>) => Row {
  const read = used === undefined ? names.map((_, k) => k) : [...used].sort((a, b) => a - b);
  const key = read.join(',');
  let byColumns = rowReaders.get(i);
  if (byColumns === undefined) rowReaders.set(i, (byColumns = new Map()));
  let reader = byColumns.get(key);
  if (reader === undefined) {
    const values = names.map((n, k) => (read.includes(k) ? `r[${JSON.stringify(n)}] ?? null` : 'null'));
    reader = new Function('r', `return [${values.join(', ')}];`) as (r: Record<string, unknown>) => Row;
    byColumns.set(key, reader);
  }
  return reader;
}

class SessionCatalog implements Catalog {
  /** Rows of change function reads in this batch: SQL Server sorts them before the first row. */
  sortedRows = 0;

  constructor(
    private readonly m: CdcModel,
    private readonly session: SessionInfo,
  ) {}

  /** [schema, name] of a 1-3 part name in this database; null for another database. */
  private resolve(parts: string[]): [string, string] {
    if (parts.length === 3 && parts[0]!.toLowerCase() !== this.m.database.toLowerCase()) {
      throw new SqlServerError(208, `Invalid object name '${parts.join('.')}'.`);
    }
    const name = parts.at(-1)!;
    const schema = parts.length >= 2 ? parts.at(-2)! : 'dbo';
    return [schema, name];
  }

  private userTable(schema: string, name: string): ModelTable | undefined {
    for (const t of this.m.tables.values()) if (t.schema.toLowerCase() === schema.toLowerCase() && t.table.toLowerCase() === name.toLowerCase()) return t;
    return undefined;
  }

  private cdcInstance(prefix: string, suffix: string, name: string): ModelInstance | undefined {
    const n = name.toLowerCase();
    if (!this.m.cdcEnabled || !n.startsWith(prefix) || !n.endsWith(suffix)) return undefined;
    return this.m.instance(name.slice(prefix.length, name.length - suffix.length));
  }

  relation(parts: string[], args: SqlValue[] | undefined, argTypes: SqlType[] | undefined): Relation {
    const [schema, name] = this.resolve(parts);
    const key = `${schema}.${name}`.toLowerCase();
    const invalid = () => new SqlServerError(208, `Invalid object name '${parts.join('.')}'.`);
    if (argTypes !== undefined) {
      // Table-valued functions.
      const i = schema.toLowerCase() === 'cdc' ? this.cdcInstance('fn_cdc_get_all_changes_', '', name) : undefined;
      if (i === undefined) throw invalid();
      if (argTypes.length !== 3) throw new SqlServerError(216, `Parameters were not supplied for the function '${parts.join('.')}'.`);
      const columns = changeColumns(i, false);
      const m = this.m;
      const catalog = this;
      return {
        columns,
        // Read from the change table (clustered on __$start_lsn, __$command_id, __$seqval,
        // __$operation) and sorted: an ORDER BY on its own columns is a sort of the whole range.
        open: () => {
          if (args === undefined) return [];
          const [from, to, filter] = args as [Buffer | null, Buffer | null, string | null];
          // The range is checked when the function runs, before its first row (error 313).
          const rows = m.changeRows(i, from, to, filter);
          const first = rows.next();
          return (function* () {
            m.openStreams++;
            m.maxOpenStreams = Math.max(m.maxOpenStreams, m.openStreams);
            try {
              for (let r = first; !r.done; r = rows.next()) {
                catalog.sortedRows++;
                yield columns.map((c) => (r.value[c.name] as SqlValue | undefined) ?? null);
              }
            } finally {
              m.openStreams--;
            }
          })();
        },
      };
    }
    const view = VIEWS[key];
    if (view !== undefined) {
      if (schema.toLowerCase() === 'cdc' && !this.m.cdcEnabled) throw invalid();
      const v = view(this.m, this.session);
      return {
        columns: v.columns,
        open: v.rows,
        ...(v.orderedBy ? { orderedBy: v.orderedBy } : {}),
        ...(v.seek ? { seek: v.seek } : {}),
        ...(v.get ? { get: v.get } : {}),
        ...(v.scanKeys ? { scanKeys: v.scanKeys } : {}),
      };
    }
    const ct = schema.toLowerCase() === 'cdc' ? this.cdcInstance('', '_ct', name) : undefined;
    if (ct !== undefined) {
      const m = this.m;
      const columns = changeColumns(ct, true);
      const names = columns.map((c) => c.name);
      const rows = function* (lo?: SeekBound, hi?: SeekBound, used?: ReadonlySet<number>): Generator<Row> {
        const toRow = rowReader(ct, names, used);
        let changes = ct.changes;
        const seek = (rows: typeof changes) => (Buffer.isBuffer(lo?.value) ? firstAtOrAfter(rows, (r) => r.__$start_lsn, lo.value, lo.inclusive) : 0);
        const from = seek(changes);
        const end = hi && Buffer.isBuffer(hi.value) ? hi.value : undefined;
        const past = hi?.inclusive ? 0 : -1;
        m.openStreams++;
        m.maxOpenStreams = Math.max(m.maxOpenStreams, m.openStreams);
        try {
          for (let i = from; ; i++) {
            if (ct.changes !== changes) {
              // The cleanup job replaced the rows while this scan waited for the client.
              i = i === from ? seek(ct.changes) : indexAfter(ct.changes, (r) => r.__$start_lsn, changes[i - 1]!);
              changes = ct.changes;
            }
            if (i >= changes.length) return;
            const r = changes[i]!;
            if (end !== undefined && compareLsn(r.__$start_lsn, end) > past) return;
            m.changeTableRowsBuilt++;
            yield toRow(r);
          }
        } finally {
          m.openStreams--;
        }
      };
      // The leading column of the clustered index alone (a count of a range of rows): no row built.
      const scanKeys = (lo: SeekBound | undefined, hi: SeekBound | undefined, visit: (key: SqlValue) => boolean): void => {
        const changes = ct.changes;
        const from = Buffer.isBuffer(lo?.value) ? firstAtOrAfter(changes, (r) => r.__$start_lsn, lo.value, lo.inclusive) : 0;
        // The end found once (a seek's upper bound), not compared per row.
        const end = hi && Buffer.isBuffer(hi.value) ? firstAtOrAfter(changes, (r) => r.__$start_lsn, hi.value, !hi.inclusive) : changes.length;
        m.openStreams++;
        m.maxOpenStreams = Math.max(m.maxOpenStreams, m.openStreams);
        try {
          for (let i = from; i < end; i++) if (!visit(changes[i]!.__$start_lsn)) return;
        } finally {
          m.openStreams--;
        }
      };
      // The change table's clustered key.
      return { columns, orderedBy: ['__$start_lsn', '__$command_id', '__$seqval', '__$operation'], open: (used) => rows(undefined, undefined, used), seek: rows, scanKeys };
    }
    const t = this.userTable(schema, name);
    if (t === undefined) throw invalid();
    return this.writableOf(t);
  }

  writable(parts: string[]): WritableTable {
    const [schema, name] = this.resolve(parts);
    const t = this.userTable(schema, name);
    if (t === undefined) throw new SqlServerError(208, `Invalid object name '${parts.join('.')}'.`);
    return this.writableOf(t);
  }

  private writableOf(t: ModelTable): WritableTable {
    const columns = t.columns.map((c) => col(c.name, declaredType(c), c.nullable));
    const toRow = (r: Record<string, unknown>): Row => t.columns.map((c) => (r[c.name] as SqlValue | undefined) ?? null);
    const toRecord = (row: Row) => Object.fromEntries(t.columns.map((c, i) => [c.name, row[i] ?? null]));
    const keyOf = (row: Row) => t.primaryKey.map((k) => String(row[t.columns.findIndex((c) => c.name === k)])).join('|');
    const check = (row: Row) => {
      t.columns.forEach((c, i) => {
        if (row[i] === null && !c.nullable) {
          throw new SqlServerError(515, `Cannot insert the value NULL into column '${c.name}', table '${this.m.database}.${t.schema}.${t.table}'; column does not allow nulls. INSERT fails.`);
        }
      });
    };
    const pkOrder = t.primaryKey.map((k) => t.columns.findIndex((c) => c.name === k));
    return {
      name: `${t.schema}.${t.table}`,
      columns,
      open: () => {
        // A clustered primary key: rows come in key order.
        const rows = [...t.rows.values()].map(toRow);
        if (pkOrder.length > 0) rows.sort((a, b) => {
          for (const i of pkOrder) {
            const x = a[i]!;
            const y = b[i]!;
            if (x === y) continue;
            if (x === null) return -1;
            if (y === null) return 1;
            if (typeof x === 'number' && typeof y === 'number') return x - y;
            return String(x).toLowerCase() < String(y).toLowerCase() ? -1 : 1;
          }
          return 0;
        });
        return rows;
      },
      insert: (row) => {
        const full = row.map((v, i) => (v === undefined ? (t.columns[i]!.defaultValue?.() ?? null) : v));
        check(full);
        const k = keyOf(full);
        if (t.rows.has(k)) {
          throw new SqlServerError(2627, `Violation of PRIMARY KEY constraint 'PK_${t.table}'. Cannot insert duplicate key in object '${t.schema}.${t.table}'. The duplicate key value is (${k.replace(/\|/g, ', ')}).`, 14);
        }
        t.rows.set(k, toRecord(full));
      },
      update: (match, set) => {
        let n = 0;
        for (const [k, r] of [...t.rows]) {
          const row = toRow(r);
          if (!match(row)) continue;
          const next = set(row);
          check(next);
          t.rows.delete(k);
          t.rows.set(keyOf(next), toRecord(next));
          n++;
        }
        return n;
      },
      delete: (match) => {
        let n = 0;
        for (const [k, r] of [...t.rows]) {
          if (match(toRow(r))) {
            t.rows.delete(k);
            n++;
          }
        }
        return n;
      },
    };
  }

  scalar(parts: string[], argTypes: SqlType[]): ScalarFunction {
    const m = this.m;
    const name = lower(parts);
    const arity = (n: number | number[]) => {
      const ok = Array.isArray(n) ? n.includes(argTypes.length) : argTypes.length === n;
      if (!ok) throw new SqlServerError(174, `The ${parts.at(-1)} function requires ${Array.isArray(n) ? n.join(' or ') : n} argument(s).`, 15);
    };
    if (name.length === 1) {
      switch (name[0]) {
        case 'db_name':
          arity([0, 1]);
          return { type: T.nvarchar(128), call: ([id]) => (id === undefined ? this.session.database : id === DATABASE_ID ? m.database : id === 1 ? 'master' : null) };
        case 'db_id':
          arity([0, 1]);
          return { type: T.int, call: ([n]) => ((n === undefined ? this.session.database : String(n)).toLowerCase() === m.database.toLowerCase() ? DATABASE_ID : (n ?? this.session.database).toString().toLowerCase() === 'master' ? 1 : null) };
        case 'schema_id':
          arity([0, 1]);
          return { type: T.int, call: ([n]) => (n === undefined ? 1 : n === null ? null : ([...m.schemas].find(([s]) => s.toLowerCase() === String(n).toLowerCase())?.[1] ?? null)) };
        case 'object_id':
          arity([1, 2]);
          return {
            type: T.int,
            call: ([n, type]) => {
              if (n === null || n === undefined) return null;
              const p = parseObjectName(String(n));
              if (p === null) return null;
              const t = p.length <= 3 ? this.userTable(p.length >= 2 ? p.at(-2)! : 'dbo', p.at(-1)!) : undefined;
              if (t === undefined || (p.length === 3 && p[0]!.toLowerCase() !== m.database.toLowerCase())) return null;
              if (type !== undefined && type !== null && String(type).trim().toUpperCase() !== 'U') return null;
              return t.objectId;
            },
          };
        case 'quotename':
          arity([1, 2]);
          return { type: T.nvarchar(258), call: ([s]) => (s === null || String(s).length > 128 ? null : `[${String(s).replace(/]/g, ']]')}]`) };
        case 'sysutcdatetime':
        case 'getutcdate':
          arity(0);
          return { type: name[0] === 'getutcdate' ? T.datetime : { name: 'datetime2', scale: 7 }, call: () => new Date() };
        case 'applock_mode':
          arity(3);
          return {
            type: T.nvarchar(32),
            call: ([, resource, owner]) => {
              if (String(owner).toLowerCase() !== 'session') return 'NoLock';
              return m.locks.get(String(resource)) === this.session.id ? 'Exclusive' : 'NoLock';
            },
          };
        case 'isnull':
        case 'coalesce':
          return { type: argTypes[0]!, call: (args) => args.find((a) => a !== null) ?? null };
      }
      if (name[0]!.startsWith('fn_')) throw new SqlServerError(195, `'${parts[0]}' is not a recognized built-in function name.`, 15);
      throw new SqlServerError(195, `'${parts[0]}' is not a recognized built-in function name.`, 15);
    }
    if (name.length === 2 && name[0] === 'sys' && name[1]!.startsWith('fn_cdc_')) {
      const requireCdc = () => {
        if (!m.cdcEnabled) throw new SqlServerError(22985, `Change data capture has not been enabled for database '${m.database}'.`);
      };
      switch (name[1]) {
        case 'fn_cdc_get_max_lsn':
          arity(0);
          return { type: T.lsn, call: () => (m.cdcEnabled ? m.maxLsn() && Buffer.from(m.maxLsn()!) : null) };
        case 'fn_cdc_get_min_lsn':
          arity(1);
          return { type: T.lsn, call: ([n]) => (requireCdc(), m.minLsn(String(n ?? ''))) };
        case 'fn_cdc_increment_lsn':
          arity(1);
          return { type: T.lsn, call: ([l]) => (l === null ? null : incrementLsn(l as Buffer)) };
        case 'fn_cdc_decrement_lsn':
          arity(1);
          return { type: T.lsn, call: ([l]) => (l === null ? null : decrementLsn(l as Buffer)) };
        case 'fn_cdc_map_lsn_to_time':
          arity(1);
          return { type: T.datetime, call: ([l]) => (l === null ? null : ((t) => (t === null ? null : isoDate(t)))(m.lsnToTime(l as Buffer))) };
        case 'fn_cdc_map_time_to_lsn':
          break;
      }
    }
    throw new SqlServerError(4121, `Cannot find either column "${parts.slice(0, -1).join('.')}" or the user-defined function or aggregate "${parts.join('.')}", or the name is ambiguous.`);
  }

  async procedure(parts: string[], args: Array<{ name?: string; value: SqlValue }>): Promise<number> {
    const name = lower(parts);
    if (name.length > 2 || (name.length === 2 && name[0] !== 'sys' && name[0] !== 'dbo')) throw new SqlServerError(2812, `Could not find stored procedure '${parts.join('.')}'.`);
    const proc = PROCEDURES[name.at(-1)!];
    if (proc === undefined) throw new SqlServerError(2812, `Could not find stored procedure '${parts.join('.')}'.`);
    // Arguments by name (@x = ...) or position, checked against the procedure's parameters.
    const values = new Map<string, SqlValue>();
    args.forEach((a, i) => {
      const pname = a.name?.toLowerCase() ?? proc.params[i]?.toLowerCase();
      if (pname === undefined || !proc.params.some((p) => p.toLowerCase() === pname)) {
        if (a.name !== undefined) throw new SqlServerError(8145, `@${a.name} is not a parameter for procedure ${parts.at(-1)}.`);
        throw new SqlServerError(8144, `Procedure or function ${parts.at(-1)} has too many arguments specified.`);
      }
      values.set(pname, a.value);
    });
    for (const p of proc.required ?? []) {
      if (!values.has(p.toLowerCase())) throw new SqlServerError(201, `Procedure or function '${parts.at(-1)}' expects parameter '@${p}', which was not supplied.`);
    }
    const get = (p: string) => values.get(p.toLowerCase()) ?? null;
    return proc.run(this.m, get, this.session, this);
  }

  createSchema(name: string): void {
    if ([...this.m.schemas.keys()].some((s) => s.toLowerCase() === name.toLowerCase())) throw new SqlServerError(2714, `There is already an object named '${name}' in the database.`);
    this.m.schemas.set(name, 100 + this.m.schemas.size);
  }

  createTable(parts: string[], columns: Array<ColumnDef & { defaultValue?: () => SqlValue }>, primaryKey: string[]): void {
    const [schema, name] = this.resolve(parts);
    const s = [...this.m.schemas.keys()].find((x) => x.toLowerCase() === schema.toLowerCase());
    if (s === undefined) throw new SqlServerError(2760, `The specified schema name "${schema}" either does not exist or you do not have permission to use it.`);
    if (this.userTable(s, name)) throw new SqlServerError(2714, `There is already an object named '${name}' in the database.`);
    for (const k of primaryKey) if (!columns.some((c) => c.name.toLowerCase() === k.toLowerCase())) throw new SqlServerError(1911, `Column name '${k}' does not exist in the target table or view.`);
    this.m.createTable(
      `${s}.${name}`,
      columns.map((c) => ({ name: c.name, type: c.type.name, sqlType: c.type, nullable: c.nullable !== false && !primaryKey.some((k) => k.toLowerCase() === c.name.toLowerCase()), ...(c.defaultValue ? { defaultValue: c.defaultValue } : {}) })),
      primaryKey,
    );
  }

  dropTable(parts: string[], ifExists: boolean): void {
    const [schema, name] = this.resolve(parts);
    const t = this.userTable(schema, name);
    if (t === undefined) {
      if (ifExists) return;
      throw new SqlServerError(3701, `Cannot drop the table '${parts.join('.')}', because it does not exist or you do not have permission.`, 11);
    }
    this.m.dropTable(`${t.schema}.${t.table}`);
  }

  async touch(names: string[]): Promise<void> {
    for (const n of names) {
      const parts = n.split('.');
      const [schema, name] = parts.length === 1 ? (PROCEDURES[n.toLowerCase()] ? ['sys', n] : ['dbo', n]) : [parts.at(-2)!, parts.at(-1)!];
      const instance = schema.toLowerCase() === 'cdc' ? (this.cdcInstance('fn_cdc_get_all_changes_', '', name) ?? this.cdcInstance('', '_ct', name)) : undefined;
      // Instance objects are named with the instance's own spelling; system objects in lower case.
      const canonical = instance ? `cdc.${name.toLowerCase().endsWith('_ct') ? `${instance.name}_CT` : `fn_cdc_get_all_changes_${instance.name}`}` : ['sys', 'cdc'].includes(schema.toLowerCase()) || PROCEDURES[name.toLowerCase()] ? `${schema}.${name}`.toLowerCase() : `${schema}.${name}`;
      await this.m.named(canonical, PROCEDURES[name.toLowerCase()] ? 'EXECUTE' : 'SELECT');
    }
  }

  /** Resolves a table for the CDC procedures. */
  sourceTable(schema: SqlValue, name: SqlValue): ModelTable {
    const t = schema === null || name === null ? undefined : this.userTable(String(schema), String(name));
    if (t === undefined) throw new SqlServerError(22853, `Could not find the source table '${String(schema)}.${String(name)}'. Verify the source table exists in the current database.`);
    return t;
  }
}

// The server keeps its own LSN arithmetic (as it keeps its own T-SQL): it must not agree with lib/ by sharing its code.
function decrementLsn(lsn: Buffer): Buffer {
  const out = Buffer.from(lsn);
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i] !== 0) {
      out[i]! -= 1;
      return out;
    }
    out[i] = 0xff;
  }
  return out;
}

interface Procedure {
  params: string[];
  required?: string[];
  run(m: CdcModel, arg: (name: string) => SqlValue, session: SessionInfo, catalog: SessionCatalog): number | Promise<number>;
}

const propertyTarget = (m: CdcModel, catalog: SessionCatalog, arg: (n: string) => SqlValue): { class: 0 | 1; majorId: number; what: string } => {
  const level0 = arg('level0type');
  if (level0 === null) return { class: 0, majorId: 0, what: 'object' };
  if (String(level0).toUpperCase() !== 'SCHEMA' || String(arg('level1type') ?? '').toUpperCase() !== 'TABLE') {
    throw new SqlServerError(15600, 'An invalid parameter or option was specified for procedure \'sp_addextendedproperty\'.');
  }
  const t = catalog.sourceTable(arg('level0name'), arg('level1name'));
  return { class: 1, majorId: t.objectId, what: `${t.schema}.${t.table}` };
};

const PROCEDURES: Record<string, Procedure> = {
  sp_cdc_enable_db: {
    params: [],
    run(m) {
      if (m.database.toLowerCase() === 'master') throw new SqlServerError(22988, 'This instance of SQL Server is the Developer Edition ... system databases cannot be enabled for Change Data Capture.');
      m.cdcEnabled = true;
      return 0;
    },
  },
  sp_cdc_disable_db: {
    params: [],
    run(m) {
      m.disableDatabase();
      return 0;
    },
  },
  sp_cdc_enable_table: {
    params: ['source_schema', 'source_name', 'role_name', 'capture_instance', 'supports_net_changes', 'index_name', 'captured_column_list', 'filegroup_name', 'allow_partition_switch'],
    required: ['source_schema', 'source_name', 'role_name'],
    run(m, arg, _s, catalog) {
      const t = catalog.sourceTable(arg('source_schema'), arg('source_name'));
      if (arg('supports_net_changes') === 1 && t.primaryKey.length === 0) throw new SqlServerError(22939, `The parameter @supports_net_changes is set to 1, but the source table '${t.schema}.${t.table}' does not have a primary key defined and no alternate unique index has been specified.`);
      const instance = arg('capture_instance');
      m.enableTable(`${t.schema}.${t.table}`, instance === null ? undefined : String(instance));
      return 0;
    },
  },
  sp_cdc_disable_table: {
    params: ['source_schema', 'source_name', 'capture_instance'],
    required: ['source_schema', 'source_name', 'capture_instance'],
    run(m, arg, _s, catalog) {
      const t = catalog.sourceTable(arg('source_schema'), arg('source_name'));
      const which = String(arg('capture_instance') ?? '');
      const own = m.instances.filter((i) => i.table === t && (which.toLowerCase() === 'all' || i.name.toLowerCase() === which.toLowerCase()));
      if (own.length === 0) throw new SqlServerError(22963, `Parameter '@capture_instance' cannot be '${which}'. The capture instance does not exist for source table '${t.schema}.${t.table}'.`);
      for (const i of own) m.disableInstance(i.name);
      return 0;
    },
  },
  sp_addextendedproperty: {
    params: ['name', 'value', 'level0type', 'level0name', 'level1type', 'level1name', 'level2type', 'level2name'],
    required: ['name'],
    run(m, arg, _s, catalog) {
      const target = propertyTarget(m, catalog, arg);
      const name = String(arg('name'));
      if (m.extendedProperties.some((p) => p.class === target.class && p.majorId === target.majorId && p.name.toLowerCase() === name.toLowerCase())) {
        throw new SqlServerError(15233, `Property cannot be added. Property '${name}' already exists for '${target.what}'.`, 11);
      }
      m.extendedProperties.push({ class: target.class, majorId: target.majorId, name, value: arg('value') === null ? null : String(arg('value')) });
      return 0;
    },
  },
  sp_dropextendedproperty: {
    params: ['name', 'level0type', 'level0name', 'level1type', 'level1name', 'level2type', 'level2name'],
    required: ['name'],
    run(m, arg, _s, catalog) {
      const target = propertyTarget(m, catalog, arg);
      const name = String(arg('name'));
      const i = m.extendedProperties.findIndex((p) => p.class === target.class && p.majorId === target.majorId && p.name.toLowerCase() === name.toLowerCase());
      if (i < 0) throw new SqlServerError(15217, `Property cannot be updated or deleted. Property '${name}' does not exist for '${target.what}'.`, 11);
      m.extendedProperties.splice(i, 1);
      return 0;
    },
  },
  sp_getapplock: {
    params: ['Resource', 'LockMode', 'LockOwner', 'LockTimeout', 'DbPrincipal'],
    required: ['Resource', 'LockMode'],
    run(m, arg, session) {
      const mode = String(arg('LockMode') ?? '');
      if (!['shared', 'update', 'intentshared', 'intentexclusive', 'exclusive'].includes(mode.toLowerCase())) throw new SqlServerError(15600, "An invalid parameter or option was specified for procedure 'sp_getapplock'.");
      const owner = String(arg('LockOwner') ?? 'Transaction');
      // Without a transaction, a transaction-owned lock cannot be taken (return code -999 with error 1223).
      if (owner.toLowerCase() !== 'session') throw new SqlServerError(1223, 'Cannot release the application lock (Database Principal: \'public\', Resource: \'x\') because it is not currently held.');
      const granted = m.tryLock(String(arg('Resource')), session.id);
      // 0: granted at once; -1: timed out (@LockTimeout = 0 means no wait).
      return granted ? 0 : -1;
    },
  },
  sp_releaseapplock: {
    params: ['Resource', 'LockOwner', 'DbPrincipal'],
    required: ['Resource'],
    run(m, arg, session) {
      const resource = String(arg('Resource'));
      if (m.locks.get(resource) !== session.id) return -999;
      m.locks.delete(resource);
      return 0;
    },
  },
};
