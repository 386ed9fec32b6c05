/**
 * The query interface the CDC reader, the lifecycle verbs, the checkpoint store and the leases are
 * written against. Each method is one statement of sql.ts. `connectSqlServer()` implements it
 * with the `mssql` driver; the test suite implements it with an in-memory model of SQL Server CDC,
 * so the reader's logic is the same code in both.
 */
import type { Readable } from 'node:stream';
import type { TableRef } from './tables.js';
import type { ColumnInfo } from './types.js';

export interface DatabaseInfo {
  database: string;
  cdcEnabled: boolean;
}

export interface SourceTable extends TableRef {
  tracked: boolean;
}

export interface CaptureInstance extends TableRef {
  name: string;
  /**
   * cdc.change_tables.start_lsn: where the instance starts (raised by cleanup). NULL until the
   * capture job has established the low endpoint: the instance cannot be read yet.
   */
  startLsn: Buffer | null;
  createDate: string;
  columns: ColumnInfo[];
}

export interface TableColumns extends TableRef {
  columns: Array<ColumnInfo & { nullable: boolean }>;
  primaryKey: string[];
}

/** The first commits of a range, counted up to a limit. */
export interface WindowCommits {
  commits: number;
  /** The LSN of the last counted commit: where a window of `limit` commits ends. */
  last: Buffer | null;
}

/**
 * A change row as changes() streams it: the values of the statement's select list in order, where
 * sql.ts changeLayout says (an array, so the driver builds no object keyed by column per row).
 */
export type ChangeRow = readonly unknown[];

/** A change row by column name (the change function's or the change table's), columns already in their selected form. */
export interface DriverChangeRow {
  __$start_lsn: Buffer;
  __$seqval: Buffer;
  /** 1 delete, 2 insert, 3 update (before image), 4 update (after image). */
  __$operation: number;
  /** The order of operations within a transaction; only the change table has it (query mode direct). */
  __$command_id?: number;
  /** One bit per captured column (column_ordinal), set for the columns an update changed. */
  __$update_mask?: Buffer | null;
  /** The commit's cdc.lsn_time_mapping.tran_end_time, ISO 8601 (server time, no offset); null without a mapping row. */
  __$commit_time?: string | null;
  [column: string]: unknown;
}

/**
 * How a change stream is read. `direct`: cdc.[<instance>_CT] in its clustered order (__$start_lsn,
 * __$command_id, __$seqval, __$operation), the order the operations happened in, with no sort.
 * `function`: cdc.fn_cdc_get_all_changes_<instance>, which has no __$command_id (rows of one
 * transaction follow __$seqval) and is sorted by SQL Server before its first row.
 */
export type QueryMode = 'direct' | 'function';

export interface ChangeReadOptions {
  /** Also the before-images of updates (operation 3). */
  updateOld: boolean;
  mode: QueryMode;
}

export interface WindowStart {
  instances: CaptureInstance[];
  /** null before the capture process has recorded anything. */
  max: Buffer | null;
}

/** A capture instance's change rows from `from` to `to` (inclusive), to count. */
export interface RowRange {
  instance: string;
  from: Buffer;
  to: Buffer;
}

export interface WindowRows {
  /** Change rows in the range, counted up to the limit. */
  rows: number;
  /** The LSN of the last counted row: where a window holding `limit` rows ends. */
  last: Buffer | null;
}

export interface SnapshotChunk {
  limit: number;
  after?: readonly unknown[];
}

export interface CheckpointRow {
  table: string;
  lsn: Buffer | null;
  position: string | null;
  source: string | null;
  savedAt: string | null;
}

export interface Marks {
  /** The task that enabled CDC on the database, if dstream did. */
  database: string | null;
  /** `schema.table` -> the task that enabled CDC on it. */
  tables: Map<string, string>;
}

export interface CdcQueries {
  /** `host:port/database` for messages; never the credentials. */
  readonly where: string;
  databaseInfo(): Promise<DatabaseInfo>;
  /** 'unknown' when the login may not see server services (or the platform has no Agent). */
  agentState(): Promise<'running' | 'stopped' | 'unknown'>;
  sourceTables(): Promise<SourceTable[]>;
  /** Every capture instance with its captured columns, oldest first per table. */
  captureInstances(): Promise<CaptureInstance[]>;
  /** captureInstances() and maxLsn() in one request: what every window asks first. */
  windowStart(): Promise<WindowStart>;
  tableColumns(): Promise<TableColumns[]>;
  /** null before the capture process has recorded anything. */
  maxLsn(): Promise<Buffer | null>;
  minLsn(instance: string): Promise<Buffer>;
  /** minLsn() of several instances in one statement, in the order given. */
  minLsns(instances: readonly string[]): Promise<Buffer[]>;
  lsnTime(lsn: Buffer): Promise<string | null>;
  /** Commits (cdc.lsn_time_mapping rows) in [from, to], counted up to `limit`. */
  windowCommits(from: Buffer, to: Buffer, limit: number): Promise<WindowCommits>;
  /** How many commits lie in (after, to]: the backlog `status` reports. */
  countTransactions(after: Buffer, to: Buffer): Promise<number>;
  /**
   * Rows of each range's change table in [from, to], counted up to `limit` (a seek on its clustered
   * index), in the order given: one batch for a window's tables, not a statement each.
   */
  windowRows(ranges: readonly RowRange[], limit: number): Promise<WindowRows[]>;
  /**
   * Streamed rows in commit order (see QueryMode), each a ChangeRow laid out as sql.ts
   * changeLayout(instance.columns, mode === 'direct') says; destroying it cancels the request.
   */
  changes(instance: CaptureInstance, from: Buffer, to: Buffer, options: ChangeReadOptions): Readable;
  /**
   * Current rows of a table, streamed, in the order of `orderBy` (its primary key) when given;
   * with `chunk`, its first `limit` rows after the key `after` (values of `orderBy`'s columns, as
   * a snapshot row carries them).
   */
  snapshot(table: TableRef, columns: readonly ColumnInfo[], orderBy: readonly string[], chunk?: SnapshotChunk): Readable;

  enableDatabase(task: string): Promise<void>;
  enableTable(table: TableRef, task: string): Promise<void>;
  disableTable(table: TableRef): Promise<void>;
  /** Removes only the mark init left on a table (its CDC was already disabled by someone else). */
  unmarkTable(table: TableRef): Promise<void>;
  disableDatabase(): Promise<void>;
  marks(): Promise<Marks>;

  checkpointTableExists(table: TableRef): Promise<boolean>;
  createCheckpointTable(table: TableRef): Promise<void>;
  dropCheckpointTable(table: TableRef): Promise<void>;
  loadCheckpoints(table: TableRef, task: string): Promise<CheckpointRow[]>;
  /** `snapshotLsn`: a snapshot under way (lsn null), the LSN it reads at. */
  saveCheckpoints(table: TableRef, task: string, source: string | null, rows: Array<{ table: string; lsn: string | null; position: string | null; snapshotLsn?: string }>): Promise<void>;
  deleteCheckpoints(table: TableRef, task: string): Promise<number>;
  /** Rows of every task. */
  checkpointRowCount(table: TableRef): Promise<number>;

  /** Session-owned application locks: held while this connection lives. */
  tryLock(resource: string): Promise<boolean>;
  holdsLock(resource: string): Promise<boolean>;

  close(): Promise<void>;
}

export interface ConnectOptions {
  /** Connections the reader may use at once (one per table with changes in a window). */
  maxConnections?: number;
  /** One connection only: session-owned locks need the same session for every statement. */
  single?: boolean;
  /** How long a statement may take to its first row; 0: no limit. Default: the connection string's Request Timeout, else 120 s. */
  requestTimeoutMs?: number;
  /**
   * With `single`: called when that connection ends. Its session-owned locks are gone with it,
   * even though the next statement runs (on a new connection).
   */
  onSessionLost?: () => void;
}

/** Opens a connection (pool); rejects with the driver's error when the server cannot be reached. */
export type CdcConnector = (options?: ConnectOptions) => Promise<CdcQueries>;
