/**
 * Every statement dstream sends to SQL Server, in one place, so the container suite exercises
 * each of them and a reviewer can read them together. Parameters are bound by name (@from, ...);
 * identifiers that cannot be parameters are quoted with quoteName().
 */
import { quoteName, type TableRef } from './tables.js';
import { typeClassOf, type ColumnInfo } from './types.js';

export const SQL = {
  databaseInfo: `SELECT DB_NAME() AS database_name, CAST(d.is_cdc_enabled AS bit) AS cdc_enabled
FROM sys.databases AS d WHERE d.database_id = DB_ID()`,

  /** Needs VIEW SERVER STATE; Azure SQL Database has no Agent (its scheduler runs capture). */
  agentState: `SELECT TOP (1) status_desc FROM sys.dm_server_services WHERE servicename LIKE N'SQL Server Agent%'`,

  sourceTables: `SELECT s.name AS schema_name, t.name AS table_name, CAST(t.is_tracked_by_cdc AS bit) AS tracked
FROM sys.tables AS t JOIN sys.schemas AS s ON s.schema_id = t.schema_id
WHERE t.is_ms_shipped = 0`,

  captureInstances: `SELECT ct.capture_instance, s.name AS schema_name, t.name AS table_name, ct.start_lsn,
  CONVERT(varchar(30), ct.create_date, 126) AS create_date
FROM cdc.change_tables AS ct
JOIN sys.tables AS t ON t.object_id = ct.source_object_id
JOIN sys.schemas AS s ON s.schema_id = t.schema_id
ORDER BY s.name, t.name, ct.create_date, ct.capture_instance`,

  /** is_max: a (max) column, NULL in before-images unless the update changed it (its bit in __$update_mask). */
  capturedColumns: `SELECT ct.capture_instance, cc.column_name, cc.column_type, cc.column_ordinal,
  CAST(CASE WHEN c.max_length = -1 AND cc.column_type IN (N'varchar', N'nvarchar', N'varbinary') THEN 1 ELSE 0 END AS bit) AS is_max
FROM cdc.captured_columns AS cc JOIN cdc.change_tables AS ct ON ct.object_id = cc.object_id
LEFT JOIN sys.columns AS c ON c.object_id = ct.source_object_id AND c.name = cc.column_name
ORDER BY ct.capture_instance, cc.column_ordinal`,

  tableColumns: `SELECT s.name AS schema_name, t.name AS table_name, c.name AS column_name, ty.name AS type_name,
  CAST(c.is_nullable AS bit) AS nullable,
  (SELECT ic.key_ordinal FROM sys.indexes AS i JOIN sys.index_columns AS ic
     ON ic.object_id = i.object_id AND ic.index_id = i.index_id
   WHERE i.object_id = t.object_id AND i.is_primary_key = 1 AND ic.column_id = c.column_id) AS key_ordinal
FROM sys.tables AS t
JOIN sys.schemas AS s ON s.schema_id = t.schema_id
JOIN sys.columns AS c ON c.object_id = t.object_id
-- the base type: aliases resolve to their system type; CLR types (240) are told apart by user_type_id
JOIN sys.types AS ty ON ty.user_type_id = CASE WHEN c.system_type_id = 240 THEN c.user_type_id ELSE c.system_type_id END
WHERE t.is_ms_shipped = 0
ORDER BY s.name, t.name, c.column_id`,

  maxLsn: `SELECT sys.fn_cdc_get_max_lsn() AS lsn`,
  minLsn: `SELECT sys.fn_cdc_get_min_lsn(@instance) AS lsn`,
  /** The min LSN of `count` instances (@instance0, @instance1, ...) in one row: lsn0, lsn1, ... */
  minLsns: (count: number) => `SELECT ${Array.from({ length: count }, (_, i) => `sys.fn_cdc_get_min_lsn(@instance${i}) AS lsn${i}`).join(', ')}`,
  lsnTime: `SELECT CONVERT(varchar(30), sys.fn_cdc_map_lsn_to_time(@lsn), 126) AS commit_time`,

  /**
   * The next @limit commits from @from, counted, and the LSN of the last one: a poll's window ends
   * there when there are that many. A seek on cdc.lsn_time_mapping's clustered index (start_lsn);
   * the commit times come with the change rows (COMMIT_TIME below), so no mapping row is fetched.
   */
  windowCommits: `SELECT COUNT_BIG(*) AS n, MAX(w.start_lsn) AS last FROM (SELECT TOP (@limit) start_lsn
FROM cdc.lsn_time_mapping WHERE start_lsn >= @from AND start_lsn <= @to ORDER BY start_lsn) AS w`,

  countTransactions: `SELECT COUNT_BIG(*) AS n FROM cdc.lsn_time_mapping WHERE start_lsn > @after AND start_lsn <= @to AND tran_id <> 0x00`,

  /**
   * Rows in each range, counted up to @limit, and the LSN of the last one: a seek on the change
   * table's clustered index (ORDER BY its leading column: no sort). No rows: the table is skipped;
   * @limit rows: the window ends at that LSN. One statement per instance, sent in one batch: range
   * i is @from<i>..@to<i>, its answer the batch's i-th result.
   */
  windowRows: (instances: readonly string[]) =>
    instances.map(
      (instance, i) => `SELECT COUNT_BIG(*) AS n, MAX(w.__$start_lsn) AS last FROM (SELECT TOP (@limit) __$start_lsn FROM cdc.${quoteName(`${instance}_CT`)}
WHERE __$start_lsn >= @from${i} AND __$start_lsn <= @to${i} ORDER BY __$start_lsn) AS w`,
    ),

  /**
   * query_mode "function": the documented change function. It has no __$command_id, and its ORDER
   * BY is not the change table's clustered key, so SQL Server sorts the range before the first row.
   */
  changes: (instance: string, columns: readonly ColumnInfo[], updateOld: boolean) =>
    `SELECT ${changeColumns(columns, false)}
FROM cdc.${quoteName(`fn_cdc_get_all_changes_${instance}`)}(@from, @to, ${updateOld ? "N'all update old'" : "N'all'"})
ORDER BY __$start_lsn, __$seqval, __$operation`,

  /**
   * query_mode "direct": the change table in its clustered order, which is also the order of the
   * operations within a transaction (__$command_id; __$seqval is not, for a deferred update).
   */
  changeTable: (instance: string, columns: readonly ColumnInfo[], updateOld: boolean) =>
    `SELECT ${changeColumns(columns, true)}
FROM cdc.${quoteName(`${instance}_CT`)}
WHERE __$start_lsn >= @from AND __$start_lsn <= @to${updateOld ? '' : ' AND __$operation <> 3'}
ORDER BY __$start_lsn, __$command_id, __$seqval, __$operation`,

  /**
   * Ordered by the primary key, so the n-th row (its Seq, and so its MessageId) is the same row when
   * a snapshot is read again. In chunks: TOP (@limit) rows, after the last key read (@k0, @k1, ...)
   * when given (keyset pagination, a seek on the key's index).
   */
  snapshot: (table: TableRef, columns: readonly ColumnInfo[], orderBy: readonly string[], chunk?: { after: boolean }) =>
    `SELECT ${chunk ? 'TOP (@limit) ' : ''}${columns.map(selectExpression).join(', ')} FROM ${quoteName(table.schema)}.${quoteName(table.table)}` +
    `${chunk?.after ? `\nWHERE ${keyAfter(orderBy)}` : ''}${orderBy.length > 0 ? `\nORDER BY ${orderBy.map(quoteName).join(', ')}` : ''}`,

  enableDatabase: `EXEC sys.sp_cdc_enable_db`,
  disableDatabase: `EXEC sys.sp_cdc_disable_db`,
  enableTable: `EXEC sys.sp_cdc_enable_table @source_schema = @schema, @source_name = @table, @role_name = NULL, @supports_net_changes = 0`,
  disableTable: `EXEC sys.sp_cdc_disable_table @source_schema = @schema, @source_name = @table, @capture_instance = N'all'`,

  /** What init enabled is marked with an extended property, so destroy undoes only that. */
  markTable: `EXEC sys.sp_addextendedproperty @name = N'dstream_enabled_cdc', @value = @task,
  @level0type = N'SCHEMA', @level0name = @schema, @level1type = N'TABLE', @level1name = @table`,
  unmarkTable: `EXEC sys.sp_dropextendedproperty @name = N'dstream_enabled_cdc',
  @level0type = N'SCHEMA', @level0name = @schema, @level1type = N'TABLE', @level1name = @table`,
  markDatabase: `EXEC sys.sp_addextendedproperty @name = N'dstream_enabled_cdc', @value = @task`,
  unmarkDatabase: `EXEC sys.sp_dropextendedproperty @name = N'dstream_enabled_cdc'`,
  marks: `SELECT CASE ep.class WHEN 0 THEN NULL ELSE s.name END AS schema_name, t.name AS table_name, CAST(ep.value AS nvarchar(400)) AS task
FROM sys.extended_properties AS ep
LEFT JOIN sys.tables AS t ON ep.class = 1 AND t.object_id = ep.major_id
LEFT JOIN sys.schemas AS s ON s.schema_id = t.schema_id
WHERE ep.name = N'dstream_enabled_cdc' AND ep.minor_id = 0 AND (ep.class = 0 OR t.object_id IS NOT NULL)`,

  checkpointTableExists: `SELECT CASE WHEN OBJECT_ID(@qualified, N'U') IS NULL THEN 0 ELSE 1 END AS found`,
  /**
   * Its own batch: a batch naming a schema that does not exist yet may not compile. CREATE SCHEMA
   * must be alone in its batch, hence EXEC; EXEC (...) takes only literals and variables, so the
   * statement is built in a variable first.
   */
  createCheckpointSchema: `DECLARE @create nvarchar(300) = N'CREATE SCHEMA ' + QUOTENAME(@schema);
IF SCHEMA_ID(@schema) IS NULL EXEC (@create)`,
  createCheckpointTable: (t: TableRef) => `IF OBJECT_ID(@qualified, N'U') IS NULL
CREATE TABLE ${quoteName(t.schema)}.${quoteName(t.table)} (
  task nvarchar(200) NOT NULL,
  table_name nvarchar(300) NOT NULL,
  lsn binary(10) NULL,
  position nvarchar(max) NULL,
  source nvarchar(200) NULL,
  saved_at datetime2(3) NOT NULL CONSTRAINT ${quoteName(`DF_${t.table}_saved_at`)} DEFAULT SYSUTCDATETIME(),
  CONSTRAINT ${quoteName(`PK_${t.table}`)} PRIMARY KEY (task, table_name)
)`,
  dropCheckpointTable: (t: TableRef) => `DROP TABLE IF EXISTS ${quoteName(t.schema)}.${quoteName(t.table)}`,
  loadCheckpoints: (t: TableRef) =>
    `SELECT table_name, lsn, position, source, CONVERT(varchar(30), saved_at, 126) AS saved_at FROM ${quoteName(t.schema)}.${quoteName(t.table)} WITH (READCOMMITTEDLOCK) WHERE task = @task`,
  /**
   * One statement for all tables of a save. A table's LSN only moves forward, so a worker that
   * lost a lease cannot move a table back behind its new owner. A snapshot under way (lsn NULL,
   * its position in `position`) replaces a stored LSN only when its own LSN is later (on_gap =
   * "snapshot" re-reads a table whose position cleanup overtook; a stale worker's snapshot is older).
   */
  saveCheckpoints: (t: TableRef) => `MERGE ${quoteName(t.schema)}.${quoteName(t.table)} WITH (HOLDLOCK) AS target
USING (SELECT @task AS task, r.table_name, CONVERT(binary(10), r.lsn, 1) AS lsn, CONVERT(binary(10), r.snapshot_lsn, 1) AS snapshot_lsn,
         r.position, @source AS source
       FROM OPENJSON(@rows) WITH (table_name nvarchar(300) '$.table', lsn varchar(22) '$.lsn', position nvarchar(max) '$.position', snapshot_lsn varchar(22) '$.snapshotLsn') AS r) AS src
ON target.task = src.task AND target.table_name = src.table_name
WHEN MATCHED AND (target.lsn IS NULL OR src.lsn >= target.lsn OR src.snapshot_lsn > target.lsn) THEN
  UPDATE SET lsn = src.lsn, position = src.position, source = src.source, saved_at = SYSUTCDATETIME()
WHEN NOT MATCHED THEN INSERT (task, table_name, lsn, position, source) VALUES (src.task, src.table_name, src.lsn, src.position, src.source);`,
  checkpointRowCount: (t: TableRef) => `SELECT COUNT(*) AS n FROM ${quoteName(t.schema)}.${quoteName(t.table)}`,
  deleteCheckpoints: (t: TableRef) => `DELETE FROM ${quoteName(t.schema)}.${quoteName(t.table)} WHERE task = @task`,

  /** Session-owned, so the lease lasts exactly as long as the connection. @LockTimeout 0: never wait. */
  tryLock: `DECLARE @result int;
EXEC @result = sys.sp_getapplock @Resource = @resource, @LockMode = N'Exclusive', @LockOwner = N'Session', @LockTimeout = 0;
SELECT @result AS result`,
  holdsLock: `SELECT APPLOCK_MODE(N'public', @resource, N'Session') AS mode`,
} as const;

/**
 * (k1, k2, ..., kn) > (@k0, @k1, ...) in T-SQL, which has no row-value comparison: k1 >= @k0 AND
 * (k1 > @k0 OR (k2 > @k1 OR (k2 = @k1 AND ...))). The leading k1 >= @k0 lets SQL Server seek.
 */
export function keyAfter(keys: readonly string[]): string {
  const k = keys.map(quoteName);
  let rest = `${k[k.length - 1]} > @k${k.length - 1}`;
  for (let i = k.length - 2; i >= 1; i--) rest = `${k[i]} > @k${i} OR (${k[i]} = @k${i} AND ${rest})`;
  return k.length === 1 ? rest : `${k[0]} >= @k0 AND (${k[0]} > @k0 OR ${rest.includes(' OR ') ? `(${rest})` : rest})`;
}

/**
 * Where each value is in a change row (SQL.changes, SQL.changeTable), which the driver hands over
 * as an array in select-list order: __$start_lsn, __$seqval, __$operation at 0, 1, 2; then
 * __$command_id (query mode direct), __$update_mask (only where a (max) column needs it), the
 * commit time, and the captured columns in capture order from `first`. -1: not selected.
 */
export interface ChangeLayout {
  commandId: number;
  updateMask: number;
  commitTime: number;
  first: number;
}

export function changeLayout(columns: readonly ColumnInfo[], direct: boolean): ChangeLayout {
  let at = 3;
  const commandId = direct ? at++ : -1;
  const updateMask = columns.some((c) => c.max) ? at++ : -1;
  const commitTime = at++;
  return { commandId, updateMask, commitTime, first: at };
}

/** The CDC columns and the captured ones, in the order of changeLayout. */
function changeColumns(columns: readonly ColumnInfo[], direct: boolean): string {
  const layout = changeLayout(columns, direct);
  const cdc = ['__$start_lsn', '__$seqval', '__$operation', ...(layout.commandId >= 0 ? ['__$command_id'] : []), ...(layout.updateMask >= 0 ? ['__$update_mask'] : [])];
  return [...cdc.map((c) => `${c} AS [${c}]`), COMMIT_TIME, ...columns.map(selectExpression)].join(', ');
}

/**
 * Each change row's commit time (cdc.lsn_time_mapping.tran_end_time, as ISO 8601 text), in the row,
 * so a window never fetches the mapping rows of its commits. A correlated subquery on the mapping's
 * unique clustered key (start_lsn): SQL Server turns it into a left outer join (a merge join or a
 * seek per row, both inputs already in start_lsn order, so no sort is added to the change read's
 * ORDER BY). Not sys.fn_cdc_map_lsn_to_time(__$start_lsn): a T-SQL scalar function runs once per
 * row as a call of its own (it is not inlined) and keeps the plan serial.
 */
const COMMIT_TIME = `(SELECT CONVERT(nvarchar(30), m.tran_end_time, 126) FROM cdc.lsn_time_mapping AS m WHERE m.start_lsn = __$start_lsn) AS [__$commit_time]`;

/**
 * The select-list expression for one captured column: SQL Server converts what JavaScript would
 * round. To Unicode text: the driver decodes nvarchar with a plain UTF-16 read, varchar through a
 * code-page decoder looked up for every value (the text is ASCII digits either way).
 */
export function selectExpression(column: ColumnInfo): string {
  const c = quoteName(column.name);
  const as = ` AS ${c}`;
  switch (typeClassOf(column.type)) {
    case 'decimal':
      // Style 2 keeps money's four decimals (the default style rounds to two).
      return /money$/i.test(column.type) ? `CONVERT(nvarchar(64), ${c}, 2)${as}` : `CONVERT(nvarchar(64), ${c})${as}`;
    case 'date':
      return `CONVERT(nchar(10), ${c}, 23)${as}`;
    case 'datetime':
    case 'datetimeoffset':
      return `CONVERT(nvarchar(40), ${c}, 126)${as}`;
    case 'time':
      return `CONVERT(nvarchar(16), ${c})${as}`;
    case 'string':
      return /^xml$/i.test(column.type) ? `CONVERT(nvarchar(max), ${c})${as}` : c;
    case 'spatial':
      return `${c}.STAsText()${as}`;
    case 'hierarchyid':
      return `${c}.ToString()${as}`;
    case 'variant':
    case 'other':
      return `CONVERT(nvarchar(max), ${c})${as}`;
    default:
      return c;
  }
}

const literal = (s: string) => `N'${s.replace(/'/g, "''")}'`;

/** The call that enables CDC on a database, as messages tell users to run it. */
export function enableDatabaseCall(database: string): string {
  return `USE ${quoteName(database)}; EXEC sys.sp_cdc_enable_db`;
}

/** The call that enables CDC on a table, as messages tell users to run it. */
export function enableTableCall(t: TableRef): string {
  return `EXEC sys.sp_cdc_enable_table @source_schema = ${literal(t.schema)}, @source_name = ${literal(t.table)}, @role_name = NULL`;
}

/** The call that disables CDC on a table, as messages tell users to run it. */
export function disableTableCall(t: TableRef): string {
  return `EXEC sys.sp_cdc_disable_table @source_schema = ${literal(t.schema)}, @source_name = ${literal(t.table)}, @capture_instance = N'all'`;
}
