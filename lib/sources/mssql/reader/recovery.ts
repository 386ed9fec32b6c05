/**
 * The reader's run and its recovery policy: connecting, what a failure means (a lost connection, a
 * moved retention start, a first row too slow, a lost lease), and going back to the last checkpoint.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Envelope } from '../../../envelope/types.js';
import { DstreamError, ErrorCodes, isDstreamError, messageOf } from '../../../errors.js';
import { retry } from '../../../retry.js';
import { isConnectionLost, sqlFailure } from '../errors.js';
import { incrementLsn } from '../lsn.js';
import type { CdcQueries } from '../queries.js';
import { LeaseLost, type CdcReader } from './core.js';
import { closeLeaseSession } from './leases.js';
import { FirstRowTimeout } from './merge.js';
import { prepare } from './start.js';
import { dropAhead, stream } from './windows.js';

export async function* envelopes(r: CdcReader): AsyncGenerator<Envelope | Envelope[]> {
  try {
    r.q = await connect(r, r.o.connectAttempts, 'start');
    try {
      yield* prepare(r);
    } catch (err) {
      // The connection went during the initial snapshot: reconnect, and window() goes on with it
      // after its last chunk handed on.
      if (r.aborted || r.handedSnapshots.size === 0 || recoveryOf(err) !== 'connection') throw sqlFailure(err, r.q.where, 'checking the database and tables');
      await recover(r, 'connection', err);
    }
    r.report(true);
    // Consecutive failures without progress (a checkpoint handed on) between them.
    let failures = 0;
    let progressAt = r.checkpointsHanded;
    while (!r.aborted) {
      try {
        yield* stream(r);
        return;
      } catch (err) {
        const kind = r.aborted ? undefined : recoveryOf(err);
        if (kind === undefined) throw sqlFailure(err, r.q.where, 'reading changes');
        if (kind === 'timeout') narrowWindow(r, err as FirstRowTimeout);
        if (kind === 'connection' || kind === 'moved') {
          failures = r.checkpointsHanded > progressAt ? 1 : failures + 1;
          progressAt = r.checkpointsHanded;
          if (failures > r.o.reconnectAttempts) throw sqlFailure(err, r.q.where, `reading changes (gave up after ${r.o.reconnectAttempts} attempts without progress)`);
          if (failures > 1) {
            // Failing again right after recovering: back off before the next attempt.
            await sleep(Math.min(r.o.retryDelayMs * 2 ** (failures - 2), 30_000), undefined, { signal: r.o.signal }).catch(() => undefined);
          }
        }
        await recover(r, kind, err);
      }
    }
  } finally {
    dropAhead(r.aheadRows);
    r.aheadRows = undefined;
    await closeQuietly(r);
  }
}

/**
 * Back on track after a failure of `kind`: the one place that reconnects. Reading goes back to
 * the last checkpoint handed on; rows after it are read again (at least once).
 */
export async function recover(r: CdcReader, kind: Recovery, err: unknown): Promise<void> {
  r.report(kind !== 'connection', kind);
  // What was asked ahead is for the window after the one that failed.
  dropAhead(r.aheadRows);
  r.aheadRows = undefined;
  r.aheadStart = undefined;
  switch (kind) {
    case 'moved':
      // 313: cleanup moved an instance's start between the gap check and the read; the next
      // window's gap check reports it properly.
      r.log(`the retained LSN range moved while reading (${messageOf(err)}); reading again from the last checkpoint`);
      break;
    case 'timeout':
      break;
    case 'lease':
      r.log(`the lease session ended (its locks went with it): stopped reading ${[...r.tables.keys()].join(', ')} at the last checkpoint; taking leases again`);
      await closeLeaseSession(r);
      break;
    case 'connection':
      r.log(`lost the connection to ${r.q.where} (${messageOf(err)}); reconnecting and resuming from the last checkpoint`);
      await closeQuietly(r);
      r.q = await connect(r, r.o.reconnectAttempts, 'reconnect');
      break;
  }
  if (r.o.lease && (kind === 'connection' || kind === 'lease')) {
    // The lease session is gone and every lock with it: leases are taken again from the stored positions.
    r.tables.clear();
    r.emitted.clear();
    r.handed.clear();
    r.handedSnapshots.clear();
  }
  // A snapshot under way goes on after the last chunk handed on (window() resumes it).
  r.snapshots = new Map(r.handedSnapshots);
  for (const [key, t] of r.tables) {
    const at = r.handed.get(key);
    if (at !== undefined) r.emitted.set(key, at);
    else r.emitted.delete(key);
    t.from = at !== undefined ? incrementLsn(at) : t.start;
  }
  r.report(true);
}

/** A window's first row did not come in time (SQL Server sorts the range first): read smaller windows, down to one commit. */
export function narrowWindow(r: CdcReader, err: FirstRowTimeout): void {
  const limit = r.rowLimit;
  if (limit <= 1) {
    throw new DstreamError(
      ErrorCodes.SQL_TIMEOUT,
      `${err.table}: reading changes at ${r.q.where}: the first row did not come within the request timeout (${err.message}), even for a window of one commit; ` +
        `raise request_timeout_ms (0: no limit)${r.o.queryMode === 'function' ? ', or use query_mode = "direct", which reads the change table in its own order with no sort' : ''}`,
      { cause: err.cause, details: { table: err.table, requestTimeoutMs: r.o.requestTimeoutMs } },
    );
  }
  r.rowLimit = Math.max(1, Math.floor(limit / 4));
  r.log(`${err.table}: the first row of a window of up to ${limit} rows did not come within the request timeout (${err.message}); reading windows of up to ${r.rowLimit} rows`);
}

export async function closeQuietly(r: CdcReader): Promise<void> {
  await r.q?.close().catch((err: unknown) => r.log(`closing the connection to ${r.q.where}: ${messageOf(err)}`));
  await closeLeaseSession(r);
}

export async function connect(r: CdcReader, attempts: number, phase: 'start' | 'reconnect'): Promise<CdcQueries> {
  const failed = (err: unknown) => sqlFailure(err, (err as { where?: string }).where ?? 'the configured server', 'connecting');
  let lastFailure: DstreamError | undefined;
  return retry(
    () => r.o.connect({ maxConnections: r.poolSize, ...(r.o.requestTimeoutMs !== undefined ? { requestTimeoutMs: r.o.requestTimeoutMs } : {}) }),
    {
      maxAttempts: attempts,
      baseMs: r.o.retryDelayMs,
      maxMs: 30_000,
      signal: r.o.signal,
      classify: (err) => isConnectionLost(err) && !r.aborted,
      onRetry: ({ attempt, delayMs, error }) => {
        lastFailure = failed(error);
        r.log(`${phase === 'start' ? 'connecting' : 'reconnecting'} (attempt ${attempt} of ${attempts}) failed: ${lastFailure.message}; retrying in ${delayMs} ms`);
      },
      fail: (err, attempt) => {
        const failure = failed(err);
        return new DstreamError(failure.code, `${failure.message}${isConnectionLost(err) ? ` (gave up after ${attempt} attempt${attempt === 1 ? '' : 's'})` : ''}`, { cause: err, details: failure.details });
      },
    },
  ).catch((err: unknown) => {
    // Stopped while waiting to retry: the connection failure is why there is nothing to read.
    throw r.aborted && lastFailure !== undefined && !isDstreamError(err) ? lastFailure : err;
  });
}

export type Recovery = 'connection' | 'moved' | 'timeout' | 'lease';

/** How reading goes on after `err`, or undefined when it cannot. */
export function recoveryOf(err: unknown): Recovery | undefined {
  if (err instanceof LeaseLost) return 'lease';
  if (err instanceof FirstRowTimeout) return 'timeout';
  if ((err as { number?: number }).number === 313) return 'moved';
  return isConnectionLost(err) ? 'connection' : undefined;
}
