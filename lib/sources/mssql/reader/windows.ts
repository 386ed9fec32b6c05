/**
 * The poll loop and its windows: each window reads the LSNs from the tables' positions to the max
 * LSN (bounded by commits and rows), after checking retention (gaps) and capture instances.
 */
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Envelope } from '../../../envelope/types.js';
import { DstreamError, ErrorCodes } from '../../../errors.js';
import { compareLsn, decrementLsn, incrementLsn, lsnToHex } from '../lsn.js';
import type { CaptureInstance, RowRange, WindowCommits, WindowRows } from '../queries.js';
import { resumeCheck } from '../retention.js';
import { changeLayout } from '../sql.js';
import { unavailableColumns, valuesMapper } from '../types.js';
import type { AheadReads, CdcReader, Segment, TableState } from './core.js';
import { leases } from './leases.js';
import { closeReads, merge, openRead, readKey } from './merge.js';
import { snapshot } from './snapshot.js';
import { forTable } from './start.js';

export async function* stream(r: CdcReader): AsyncGenerator<Envelope | Envelope[]> {
  let idle = 0;
  while (!r.aborted) {
    if (r.o.lease) yield* leases(r);
    const started = Date.now();
    const result = yield* window(r);
    if (r.aborted) return;
    if (result === 'full') {
      idle = 0;
      continue;
    }
    if (result === 'rows') idle = 0;
    else idle++;
    // Changes keep coming: polls start every interval, so a window that took longer (the rows
    // waited for the sink, or there were many) is followed by the next at once, not an interval later.
    const wait = result === 'rows' ? r.o.pollIntervalMs - (Date.now() - started) : idleWait(idle, r.o.pollIntervalMs, r.o.maxPollIntervalMs);
    if (wait > 0) await sleep(wait, undefined, { signal: r.o.signal }).catch(() => undefined);
  }
}

/** Idle polls at the base interval before the wait starts doubling. */
export const IDLE_POLLS_AT_BASE = 3;

/**
 * The wait after the `idle`-th poll in a row that found nothing: the base interval for the first
 * IDLE_POLLS_AT_BASE (a pause of a second or two in a steady stream of changes does not stretch
 * the next change's latency to twice the interval), then doubling up to `max` (a quiet table costs
 * SQL Server few polls).
 */
export function idleWait(idle: number, pollIntervalMs: number, maxPollIntervalMs: number): number {
  const doublings = Math.min(Math.max(0, idle - IDLE_POLLS_AT_BASE), 16);
  return Math.min(pollIntervalMs * 2 ** doublings, maxPollIntervalMs);
}

/** Reads one window. 'full': the window was capped (more is waiting); 'rows': some rows; 'idle': none. */
export async function* window(r: CdcReader): AsyncGenerator<Envelope | Envelope[], 'full' | 'rows' | 'idle'> {
  // What the window before asked for ahead: for this window only, its reads closed whatever happens.
  const ahead = r.aheadRows;
  r.aheadRows = undefined;
  try {
    return yield* read(r, ahead);
  } finally {
    dropAhead(ahead);
  }
}

/** Reads opened ahead and not used (the window ended early, failed, or read other ranges): closed. */
export function dropAhead(ahead: Promise<AheadReads> | undefined): void {
  ahead?.then(
    (a) => closeReads(a.reads),
    () => undefined,
  );
}

async function* read(r: CdcReader, ahead: Promise<AheadReads> | undefined): AsyncGenerator<Envelope | Envelope[], 'full' | 'rows' | 'idle'> {
  const q = r.q;
  const start = r.aheadStart;
  r.aheadStart = undefined;
  if (r.tables.size === 0) return 'idle';
  // The capture instances and the max LSN in one request before the window (or none, asked ahead).
  const { instances: all, max } = await (start ?? q.windowStart());
  // Stopped while a statement was out: nothing more is sent (the window is read again next time).
  if (max === null || r.aborted) return 'idle';
  for (const t of r.tables.values()) {
    const instances = forTable(all, t.ref);
    if (instances.length === 0) {
      throw new DstreamError(ErrorCodes.CDC_NOT_ENABLED, `CDC was disabled on ${t.key} while dstream was reading it (no capture instance left); enable it again, then decide whether to re-read it (on_gap = "snapshot")`, { details: { table: t.key } });
    }
    t.instances = instances;
  }
  // A snapshot under way when reading failed goes on after its last chunk handed on.
  const resuming = [...r.tables.values()].filter((t) => r.snapshots.has(t.key));
  if (resuming.length > 0) yield* snapshot(r, resuming, 'snapshot');
  // Where each table resumes: from its position, or its instance's start when that came later;
  // tables whose cleanup overtook their position: fail, skip or snapshot (onGap).
  const gaps: TableState[] = [];
  for (const t of r.tables.values()) {
    const readable = t.instances.some((i) => i.startLsn !== null);
    if (!readable && t.readable) r.log(`${t.key}: its capture instance has no start LSN yet (the capture job has not established it); reading it once it has`);
    t.readable = readable;
    if (!readable || compareLsn(t.from, max) > 0) continue;
    const check = await resumeCheck(q, t.instances, t.from, r.emitted.get(t.key) ?? t.startAt);
    if (r.aborted) return 'idle';
    if (check.state === 'ok') t.from = check.from;
    else if (check.state === 'gap') {
      gaps.push(t);
      await gap(r, t, check.instance, check.min);
    }
  }
  if (r.aborted) return 'idle';
  if (gaps.length > 0 && r.o.onGap === 'snapshot') {
    yield* snapshot(r, gaps, 'on_gap = "snapshot"');
  }
  const active = [...r.tables.values()].filter((t) => t.readable);
  let low: Buffer | undefined;
  for (const t of active) if (low === undefined || compareLsn(t.from, low) < 0) low = t.from;
  if (low === undefined || compareLsn(low, max) > 0) {
    r.sawBacklog(0);
    if (Date.now() - r.lastCheckpointAt >= r.o.heartbeatMs && r.emitted.size > 0) {
      const cp = r.checkpoint(false);
      await r.verify(r.emitted, []);
      yield cp;
    }
    return 'idle';
  }
  const commits = await commitsFrom(r, low, max);
  if (r.aborted) return 'idle';
  r.sawBacklog(commits.commits);
  let full = commits.commits >= r.o.maxTransactions && commits.last !== null;
  let to = full ? commits.last! : max;
  // Tables with changes, and where `rowLimit` rows of one of them end the window (a seek on the
  // change table's clustered index; idle tables open no stream). The counts were sent while the
  // window before was read, or are sent now, all at once; so were the reads of the ranges they gave.
  const before = ahead && (await ahead.catch(() => undefined));
  if (r.aborted) return 'idle';
  const planned = await plan(r, active, to, full, before?.counted ?? new Map());
  if (planned === undefined || r.aborted) return 'idle';
  ({ to, full } = planned);
  const segments = planned.segments;
  for (const s of segments) {
    const t = s.table;
    if (t.reading !== undefined && t.reading !== s.instance.name) {
      r.log(`${t.key}: switching from capture instance ${t.reading} to ${s.instance.name}, which starts at LSN ${lsnToHex(s.instance.startLsn!)}`);
    }
    t.reading = s.instance.name;
  }
  // Where the next window starts, and (after a capped window: a backlog) its commits, asked for
  // now so they are there when this window ends; not once stopped.
  const next = incrementLsn(to);
  if (full) {
    const ahead = { from: next, max, commits: q.windowCommits(next, max, r.o.maxTransactions) };
    r.ahead = ahead;
    ahead.commits.catch(() => undefined);
    // And its row counts, as soon as its commits say where it ends, then its reads: their round
    // trips and first rows overlap this window's merge. Counts of a range up to the max LSN do
    // not change (cleanup aside, which only ends a window sooner, and which a check after the
    // rows are read catches); the next window uses the counts and reads of the ranges it reads.
    const end = to;
    r.aheadRows = ahead.commits.then(async (c) => {
      if (r.aborted) throw new Error('stopped');
      const nextFull = c.commits >= r.o.maxTransactions && c.last !== null;
      const tables = active.map((t) => (compareLsn(t.from, end) <= 0 ? { ...t, from: next } : t));
      // plan() sends every count at once into `counted`, which the next window takes whatever happens here.
      const counted = new Map<string, Promise<WindowRows>>();
      const reads = new Map<string, Readable>();
      const p = await plan(r, tables, nextFull ? c.last! : max, nextFull, counted).catch(() => undefined);
      // Opened only while both windows' reads and a check fit in the pool, and this window is still the reader's.
      if (p !== undefined && !r.aborted && r.q === q && segments.length + p.segments.length + 1 <= r.poolSize) {
        for (const s of p.segments) {
          const read = openRead(r, s);
          // A read that fails before its window takes it keeps its error (`errored`) and is not
          // taken: its window reads the range anew and meets the failure there, if it lasts.
          read.on('error', () => undefined);
          reads.set(readKey(s), read);
        }
      }
      return { counted, reads };
    });
    r.aheadRows.catch(() => undefined);
  }
  const { rows, checked } = yield* merge(r, segments, before?.reads);
  // Stopped mid-window: the rest is read again next time; nothing past the last checkpoint counts.
  if (r.aborted) return 'idle';
  if (full) {
    // The next window starts at once: its first round trip goes beside this window's last check.
    const start = q.windowStart();
    start.catch(() => undefined);
    r.aheadStart = start;
  }
  // Every table read through `to` (those ahead stay where they are): one checkpoint for the window.
  for (const t of active) {
    if (compareLsn(t.from, to) <= 0) {
      r.emitted.set(t.key, to);
      t.from = next;
    }
  }
  if (!full) r.sawBacklog(0);
  if (r.rowLimit < r.o.maxRows) r.rowLimit = Math.min(r.o.maxRows, r.rowLimit * 2);
  if (rows > 0 || Date.now() - r.lastCheckpointAt >= r.o.heartbeatMs) {
    const cp = r.checkpoint(false);
    // The merge's last check was sent once every row was read: it covers this checkpoint too.
    await r.verify(r.emitted, segments, checked);
    yield cp;
  }
  return full ? 'full' : rows > 0 ? 'rows' : 'idle';
}

/**
 * A window's reads up to `to`: the segments of `tables` with rows, each ending by `to`, where a
 * table's count reaching the row limit first moves `to` back (and the window is then `full`).
 * Counts missing from `counted` are asked for; undefined when stopped meanwhile.
 */
async function plan(r: CdcReader, tables: readonly TableState[], to: Buffer, full: boolean, counted: Map<string, Promise<WindowRows>>): Promise<{ segments: Segment[]; to: Buffer; full: boolean } | undefined> {
  const direct = r.o.queryMode === 'direct';
  countRows(r, tables, to, counted);
  const found: Segment[] = [];
  for (const t of tables) {
    if (compareLsn(t.from, to) > 0) continue;
    for (const s of segmentsOf(t, to, direct)) {
      if (compareLsn(s.from, to) > 0) continue;
      const end = compareLsn(s.to, to) < 0 ? s.to : to;
      // Counted in turn: a count whose range `to` moved into is taken again (with the other
      // ranges up to the new `to`, in one request), so the window is the one counting each table
      // in turn gives.
      const key = rangeKey(s, end, r.rowLimit);
      if (!counted.has(key)) {
        if (r.aborted) return undefined;
        countRows(r, tables, to, counted);
      }
      const n = await counted.get(key)!;
      if (n.rows === 0) continue;
      if (n.rows >= r.rowLimit && n.last !== null && compareLsn(n.last, end) < 0) {
        to = n.last;
        full = true;
      }
      found.push(s);
    }
  }
  const segments: Segment[] = [];
  for (const s of found) {
    if (compareLsn(s.from, to) <= 0) segments.push(compareLsn(s.to, to) > 0 ? { ...s, to } : s);
  }
  return { segments, to, full };
}

/** What identifies a row count: the instance, the range and the limit. */
function rangeKey(s: Segment, end: Buffer, limit: number): string {
  return `${s.instance.name} ${lsnToHex(s.from)} ${lsnToHex(end)} ${limit}`;
}

/** Sends the row counts of the tables' segments up to `to` that `counted` does not have yet, in one request. */
function countRows(r: CdcReader, tables: readonly TableState[], to: Buffer, counted: Map<string, Promise<WindowRows>>): Map<string, Promise<WindowRows>> {
  const keys: string[] = [];
  const ranges: RowRange[] = [];
  for (const t of tables) {
    if (compareLsn(t.from, to) > 0) continue;
    for (const s of segmentsOf(t, to, r.o.queryMode === 'direct')) {
      if (compareLsn(s.from, to) > 0) continue;
      const end = compareLsn(s.to, to) < 0 ? s.to : to;
      const key = rangeKey(s, end, r.rowLimit);
      if (counted.has(key) || keys.includes(key)) continue;
      keys.push(key);
      ranges.push({ instance: s.instance.name, from: s.from, to: end });
    }
  }
  if (ranges.length === 0) return counted;
  const all = r.q.windowRows(ranges, r.rowLimit);
  keys.forEach((key, i) => {
    const n = all.then((rows) => rows[i]!);
    n.catch(() => undefined);
    counted.set(key, n);
  });
  return counted;
}

/**
 * The first `maxTransactions` commits in [low, max], counted: the ones asked for ahead when they
 * are the same (counted from the same LSN, and either up to the same max or already that many
 * commits before it), else asked now.
 */
async function commitsFrom(r: CdcReader, low: Buffer, max: Buffer): Promise<WindowCommits> {
  const limit = r.o.maxTransactions;
  const ahead = r.ahead;
  r.ahead = undefined;
  if (ahead !== undefined && compareLsn(ahead.max, max) <= 0) {
    const got = ahead.from.equals(low) ? await ahead.commits.catch(() => undefined) : undefined;
    if (got !== undefined && (got.commits >= limit || ahead.max.equals(max))) return got;
  }
  return r.q.windowCommits(low, max, limit);
}

export async function gap(r: CdcReader, t: TableState, instance: CaptureInstance, min: Buffer): Promise<void> {
  const stored = r.emitted.get(t.key);
  const what =
    `${t.key}: SQL Server's CDC cleanup has removed changes dstream had not read: the position is ${stored ? lsnToHex(stored) : `the start ${lsnToHex(t.from)}`}, ` +
    `but capture instance ${instance.name} now starts at ${lsnToHex(min)} (changes are kept for the cleanup job's retention, 3 days unless changed)`;
  if (r.o.onGap === 'fail') {
    throw new DstreamError(
      ErrorCodes.CDC_GAP,
      `${what}. Changes in between are lost to dstream. Choose how to go on: on_gap = "snapshot" re-reads the table's current rows and streams from there; ` +
        `on_gap = "skip" continues from ${lsnToHex(min)} accepting the loss; or \`dstream reset <task>\` starts over from \`start\`. ` +
        `To prevent it, keep dstream running or raise retention: EXEC sys.sp_cdc_change_job @job_type = N'cleanup', @retention = <minutes>`,
      { details: { table: t.key, position: stored ? lsnToHex(stored) : null, minLsn: lsnToHex(min), instance: instance.name } },
    );
  }
  if (r.o.onGap === 'skip') {
    r.log(`WARNING: ${what}. on_gap = "skip": continuing from ${lsnToHex(min)}; the changes in between are LOST`);
    t.from = min;
  } else {
    r.log(`${what}. on_gap = "snapshot": re-reading the table's current rows`);
  }
}

/**
 * The reads of one table in a window. With two capture instances (after a schema change), the
 * older is read up to the newer one's start LSN and the newer from there on. `direct`: query mode
 * direct (its rows have __$command_id).
 */
export function segmentsOf(t: TableState, to: Buffer, direct: boolean): Segment[] {
  const out: Segment[] = [];
  const list = t.instances.filter((i): i is CaptureInstance & { startLsn: Buffer } => i.startLsn !== null);
  for (let i = 0; i < list.length; i++) {
    const instance = list[i]!;
    const next = list[i + 1];
    if (next !== undefined && compareLsn(t.from, next.startLsn) >= 0) continue; // already past it
    const from = compareLsn(t.from, instance.startLsn) >= 0 ? t.from : instance.startLsn;
    if (compareLsn(from, to) > 0) break;
    // The older instance up to the newer one's start: its last commit before it, or none (then
    // its row count is 0 and it is not read).
    const end = next !== undefined && compareLsn(next.startLsn, to) <= 0 ? decrementLsn(next.startLsn) : to;
    out.push({ table: t, instance, from, to: end, ...(next ? { before: next.startLsn } : {}), ...readingOf(instance, direct) });
  }
  return out;
}

type Reading = Pick<Segment, 'layout' | 'map' | 'unavailable'>;
const readings = new WeakMap<CaptureInstance, Reading>();
/** Readings by what they are made from: the captured columns and the query mode. */
const byColumns = new Map<string, Reading>();
/** Column lists kept at most (a process may read many databases' instances over its life). */
const KEPT_READINGS = 256;

/**
 * How an instance's change rows are read, worked out once per column list: its segments are made
 * for the counts, again for the reads and for the next window's counts. Each window's
 * captureInstances() gives new objects, and the mapper is compiled code (types.ts valuesMapper):
 * a new mapper every window would run cold through the first few thousand rows of each window
 * (measured: 2-4% of the reader's time over a 200k-row backlog read in 16 windows) while the
 * runtime optimises it again.
 */
function readingOf(instance: CaptureInstance, direct: boolean): Reading {
  let reading = readings.get(instance);
  if (reading !== undefined) return reading;
  const key = `${direct ? 'direct' : 'function'} ${JSON.stringify(instance.columns)}`;
  reading = byColumns.get(key);
  if (reading === undefined) {
    const layout = changeLayout(instance.columns, direct);
    reading = { layout, map: valuesMapper(instance.columns, layout.first), unavailable: unavailableColumns(instance.columns) };
    if (byColumns.size >= KEPT_READINGS) byColumns.clear();
    byColumns.set(key, reading);
  }
  readings.set(instance, reading);
  return reading;
}
