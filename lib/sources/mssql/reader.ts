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
import { sqlServerConnector } from './sqlserver.js';
import { CdcReader } from './reader/core.js';
import type { MssqlCdcOptions } from './reader/options.js';
import { envelopes } from './reader/recovery.js';
import { generatorStream } from './reader/stream.js';
import { backlogProbe, type SourceBacklog } from './backlog.js';

export { MSSQL_SOURCE } from './reader/core.js';
export type { GapPolicy, LeaseOptions, MssqlCdcOptions, ReaderState } from './reader/options.js';
export { parsePosition, positionOf, type MssqlCdcPosition } from './position.js';
export type { SourceBacklog } from './backlog.js';
export { agentStoppedMessage, checkTables, forTable, tableNotFound } from './reader/start.js';

/** The reader's stream, which also answers how many commits wait in the source (for metrics). */
export interface MssqlCdcStream extends Readable {
  /** Commits after the position being read up to the max LSN (see backlog.ts); undefined until known. */
  backlog(): Promise<SourceBacklog | undefined>;
}

/** The reader as a Readable (object mode) of change envelopes and checkpoints. */
export function mssqlCdc(options: MssqlCdcOptions): MssqlCdcStream {
  if ((options.connect === undefined) === (options.connectionString === undefined)) {
    throw invalidOption('mssqlCdc() needs exactly one of connectionString or connect');
  }
  const connect = options.connect ?? sqlServerConnector(options.connectionString!);
  // Destroying the stream must stop the reader even while it waits between polls, where the
  // generator is not at a yield and would not see return(): it watches this signal instead.
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  const reader = new CdcReader({ ...options, connect, signal });
  const stream = generatorStream(envelopes(reader), stop);
  // Held back: its buffer is full, so the reader is suspended at a yield, not polling.
  const held = () => stream.readableLength >= stream.readableHighWaterMark;
  return Object.assign(stream, { backlog: backlogProbe(reader, held) });
}

