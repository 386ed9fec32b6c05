/**
 * mssqlCdc(): SQL Server change data capture as a Readable of envelopes in commit order, with
 * checkpoint markers at transaction boundaries.
 *
 * Each poll reads one window of LSNs: from the position after the last checkpoint to the capture
 * process's max LSN, capped at `maxTransactions` commits (cdc.lsn_time_mapping) and at `maxRows`
 * rows per table, so a backlog of any size is read in bounded steps. Within a window, every table
 * with changes is streamed from its capture instance (its change table in clustered order, or the
 * change function: queryMode), and the streams are merged by (start LSN, command id, seqval,
 * operation): the order SQL Server committed them. Rows are pulled only as fast as the consumer
 * reads, so memory stays bounded by the driver's stream buffers, not by the window.
 */
import type { Readable } from 'node:stream';
import { invalidOption } from '../../errors.js';
import type { CdcConnector, QueryMode } from './queries.js';
import type { TableRef } from './tables.js';
import { sqlServerConnector } from './sqlserver.js';
import { CdcReader } from './reader/core.js';
import { envelopes } from './reader/recovery.js';
import { generatorStream } from './reader/stream.js';

export { MSSQL_SOURCE } from './reader/core.js';
export { parsePosition, positionOf, type MssqlCdcPosition } from './position.js';
export { agentStoppedMessage, checkTables, forTable, tableNotFound } from './reader/start.js';

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
  /** Poll interval when changes keep coming. Default 500. */
  pollIntervalMs?: number;
  /** The idle back-off doubles up to this. Default 5000. */
  maxPollIntervalMs?: number;
  /** Commits per window. Default 10000. */
  maxTransactions?: number;
  /** Rows per table per window (a window ends at a commit boundary, so its last commit is whole). Default 10000. */
  maxRows?: number;
  /** `direct` (default): the change table in its clustered order, which orders a transaction's operations by __$command_id; `function`: cdc.fn_cdc_get_all_changes_<instance>. */
  queryMode?: QueryMode;
  /** How long a statement may take to its first row (0: no limit). Default: the connection string's Request Timeout, else 120000. */
  requestTimeoutMs?: number;
  /** A checkpoint at the first transaction boundary after this many rows. Default 1000. */
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
}

/** The reader as a Readable (object mode) of change envelopes and checkpoints. */
export function mssqlCdc(options: MssqlCdcOptions): Readable {
  if ((options.connect === undefined) === (options.connectionString === undefined)) {
    throw invalidOption('mssqlCdc() needs exactly one of connectionString or connect');
  }
  const connect = options.connect ?? sqlServerConnector(options.connectionString!);
  // Destroying the stream must stop the reader even while it waits between polls, where the
  // generator is not at a yield and would not see return(): it watches this signal instead.
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  const reader = new CdcReader({ ...options, connect, signal });
  return generatorStream(envelopes(reader), stop);
}

