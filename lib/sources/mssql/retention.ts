/**
 * Where a table's reading can resume, given what its capture instances still hold: the one rule
 * the reader (before each window) and `status` (its warning) share.
 *
 * An instance starts at cdc.change_tables.start_lsn: NULL until the capture job has established
 * it, set when the table is enabled, raised by the cleanup job. Reading below the start is a gap
 * only when the instance existed before the position: a new instance starts where the log was when
 * it was enabled, which can lie past the max LSN while the capture job catches up (capture lag),
 * and past a position stored before it existed. Like Debezium's getFromLsn, such a start is simply
 * where reading begins.
 */
import type { CaptureInstance, CdcQueries } from './queries.js';
import { compareLsn } from './lsn.js';

export type ResumeCheck =
  /** No capture instance of the table has a start yet: nothing to read, nothing lost. */
  | { state: 'pending' }
  /** Read from `from` (the position's next LSN, or the instance's start when that is later). */
  | { state: 'ok'; from: Buffer }
  /** Cleanup removed changes after the position: `instance` now starts at `min`. */
  | { state: 'gap'; instance: CaptureInstance; min: Buffer };

/**
 * `instances`: the table's capture instances, oldest first; `from`: the next LSN to read;
 * `since`: the position read through (or an explicit start), whose commit time tells whether an
 * instance existed before it; undefined when nothing was read yet (start = earliest).
 */
export async function resumeCheck(q: Pick<CdcQueries, 'lsnTime'>, instances: readonly CaptureInstance[], from: Buffer, since: Buffer | undefined): Promise<ResumeCheck> {
  const readable = instances.filter((i): i is CaptureInstance & { startLsn: Buffer } => i.startLsn !== null);
  if (readable.length === 0) return { state: 'pending' };
  const instance = coveringInstance(readable, from);
  const min = instance.startLsn;
  if (compareLsn(from, min) >= 0) return { state: 'ok', from };
  if (since === undefined || (await createdAfter(q, instance, since))) return { state: 'ok', from: min };
  return { state: 'gap', instance, min };
}

/** The instance that holds changes at `from`: the newest one starting at or before it (else the oldest). */
export function coveringInstance<T extends CaptureInstance & { startLsn: Buffer }>(instances: readonly T[], from: Buffer): T {
  let pick = instances[0]!;
  for (const i of instances) if (compareLsn(i.startLsn, from) <= 0) pick = i;
  return pick;
}

/**
 * True when the instance was enabled at or after the commit of `lsn` (cdc.change_tables.create_date
 * against cdc.lsn_time_mapping's tran_end_time, both server time). When cleanup has pruned the
 * mapping past `lsn` there is no time to compare, and the answer is no: a gap is reported rather
 * than risked (docs/sql-server.md, "Retention and gaps").
 */
async function createdAfter(q: Pick<CdcQueries, 'lsnTime'>, instance: CaptureInstance, lsn: Buffer): Promise<boolean> {
  const committed = await q.lsnTime(lsn);
  if (committed === null) return false;
  return Date.parse(`${instance.createDate}Z`) >= Date.parse(`${committed}Z`);
}
