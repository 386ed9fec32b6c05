/** mssqlCdc()'s options (reader.ts exports them). */
import type { CdcConnector, QueryMode } from '../queries.js';
import type { TableRef } from '../tables.js';

export type GapPolicy = 'fail' | 'snapshot' | 'skip';

export interface LeaseOptions {
  /** Names the locks (`dstream/<task>/<schema.table>`) and the checkpoint rows. */
  task: string;
  /** Where a worker taking over a table reads that table's position. */
  checkpointTable: TableRef;
  /** How often a worker tries to take tables nobody holds. Default 5000. */
  checkEveryMs?: number;
  /** Most tables one worker holds, so N workers share the tables (ceil(tables / N)). Default: all. */
  maxTables?: number;
}

export interface MssqlCdcOptions {
  /** How to open connections; or give `connectionString`. */
  connect?: CdcConnector;
  /** SQL Server connection string (never logged), for the `mssql` driver. */
  connectionString?: string;
  /** `Persons` (schema dbo) or `sales.Orders`. */
  tables: string[];
  /** Where to start without a stored position: `latest` (default), `earliest`, or an LSN (inclusive). */
  start?: string;
  /** A stored position (from a checkpoint) to resume after. */
  after?: unknown;
  /** Emit the current rows of each table (OperationType Read) before streaming. Default false. */
  snapshot?: boolean;
  /** A snapshot reads each table in chunks of this many rows in primary-key order, with a checkpoint after each. Default 10000. */
  snapshotChunkRows?: number;
  /** Also emit each update's before-image (OperationType UpdateBefore). Default false. */
  updateBefore?: boolean;
  onGap?: GapPolicy;
  /** Poll interval when changes keep coming, from the start of one window to the next (a longer window is followed at once). Default 500. */
  pollIntervalMs?: number;
  /** After three idle polls at `pollIntervalMs`, the idle back-off doubles up to this. Default 5000. */
  maxPollIntervalMs?: number;
  /** Commits per window. Default 10000. */
  maxTransactions?: number;
  /** Rows per table per window (a window ends at a commit boundary, so its last commit is whole). Default 10000. */
  maxRows?: number;
  /** `direct` (default): the change table in its clustered order, which orders a transaction's operations by __$command_id; `function`: cdc.fn_cdc_get_all_changes_<instance>. */
  queryMode?: QueryMode;
  /** How long a statement may take to its first row (0: no limit). Default: the connection string's Request Timeout, else 120000. */
  requestTimeoutMs?: number;
  /** A checkpoint at the first transaction boundary after this many rows (and at each window's end); one whose check SQL Server answers only after ~1000 more rows is left out, a later one covering its rows. Default 1000. */
  checkpointEveryRows?: number;
  /** While idle, a checkpoint this often, so quiet tables keep up with retention. Default 10000. */
  heartbeatMs?: number;
  /** Attempts to connect at start-up. Default 5. */
  connectAttempts?: number;
  /** Attempts to reconnect after losing the connection while streaming. Default 20. */
  reconnectAttempts?: number;
  /** First back-off between attempts; doubles up to 30 s. Default 1000. */
  retryDelayMs?: number;
  /** Connections in the pool. Default 10; raised to 2 x tables + 1: each table with changes in a window streams at once, from two capture instances while it switches. */
  maxConnections?: number;
  /** Several workers per task: each table read by the one worker holding its lease. */
  lease?: LeaseOptions;
  source?: string;
  signal?: AbortSignal;
  log?: (message: string) => void;
  /** Where the reader stands, on each change of connection or leases (metrics, readiness). */
  onState?: (state: ReaderState) => void;
}

export interface ReaderState {
  connected: boolean;
  /** Lease mode: the tables (`schema.table`) whose leases this worker holds. */
  leases?: string[];
  /** Lease mode: every table is leased by another worker. */
  standby: boolean;
  /** Set when the reader goes back to its last checkpoint: why. */
  recovering?: 'connection' | 'moved' | 'timeout' | 'lease';
}
