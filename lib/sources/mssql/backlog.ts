/**
 * The source's commit backlog: commits in cdc.lsn_time_mapping from where the reader reads to the
 * max LSN, counted up to `maxTransactions` (the count each window takes anyway).
 *
 * Each window counts its commits before it reads them, so while windows come and go that count
 * costs nothing more. A reader held back (the sink stalled: its stream's buffer is full and nobody
 * takes from it) polls no more and sees no new commits, which is exactly when the backlog grows:
 * then, and only then, asking costs two statements (max LSN, the count), at most once a second
 * and one at a time, on the reader's pool.
 */
import { compareLsn } from './lsn.js';
import type { CdcReader } from './reader/core.js';

export interface SourceBacklog {
  /** Commits after the position being read, up to the max LSN. */
  commits: number;
  /** The count stopped at `maxTransactions`: there are at least that many. */
  atLeast: boolean;
}

/** How long a probe waits for its statements before answering with what it had. */
const PROBE_WAIT_MS = 2000;

/**
 * A function answering the backlog when asked (by a metrics collection); undefined before anything
 * is known. `held`: the reader's consumer has stopped taking what it reads (its stream's buffer is
 * full), so the reader polls no more and its last figure ages.
 */
export function backlogProbe(r: CdcReader, held: () => boolean): () => Promise<SourceBacklog | undefined> {
  // How old a figure may be while the reader is held back (polls come at least this often otherwise).
  const heldMs = Math.max(r.o.pollIntervalMs, 1000);
  let measured: (SourceBacklog & { at: number }) | undefined;
  let measuring: Promise<void> | undefined;
  const measure = async (): Promise<void> => {
    // Dated when asked: a window that starts meanwhile has the newer figure.
    const at = Date.now();
    const q = r.q;
    const max = await q.maxLsn();
    // A stopped reader sends no further statement; nor does its probe.
    if (r.aborted) return;
    let low: Buffer | undefined;
    for (const t of r.tables.values()) if (t.readable && (low === undefined || compareLsn(t.from, low) < 0)) low = t.from;
    if (max === null || low === undefined || compareLsn(low, max) > 0) {
      measured = { commits: 0, atLeast: false, at };
      return;
    }
    const c = await q.windowCommits(low, max, r.o.maxTransactions);
    measured = { commits: c.commits, atLeast: c.commits >= r.o.maxTransactions, at };
  };
  return async () => {
    const seen = r.backlog;
    const now = Date.now();
    // Polling: the windows' figure (at most a poll interval old; idle, up to max_poll_interval_ms).
    if (seen !== undefined && !held()) return answer(seen);
    const last = newer(seen, measured);
    if (last !== undefined && now - last.at < heldMs) return answer(last);
    // Not connected yet, or stopping: what is known. No table to read (a standby): nothing waits.
    if (r.q === undefined || r.aborted) return answer(last);
    if (r.tables.size === 0) return { commits: 0, atLeast: false };
    // A failed count leaves the last figure: the reader's own statements meet the same failure
    // and report it (dstream_source_connected, dstream_source_recoveries_total).
    measuring ??= measure()
      .catch(() => undefined)
      .finally(() => (measuring = undefined));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([measuring, new Promise((resolve) => (timer = setTimeout(resolve, PROBE_WAIT_MS)))]);
    clearTimeout(timer);
    return answer(newer(r.backlog, measured));
  };
}

function newer<A extends { at: number }, B extends { at: number }>(a: A | undefined, b: B | undefined): A | B | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return b.at > a.at ? b : a;
}

function answer(b: SourceBacklog | undefined): SourceBacklog | undefined {
  return b === undefined ? undefined : { commits: b.commits, atLeast: b.atLeast };
}
