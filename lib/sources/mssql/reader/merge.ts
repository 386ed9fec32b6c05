/**
 * A window's change streams, one per table and capture instance, merged in commit order into
 * batches of envelopes, with checkpoints at transaction boundaries.
 */
import type { Readable } from 'node:stream';
import type { Envelope } from '../../../envelope/types.js';
import { messageOf } from '../../../errors.js';
import { compareLsn, lsnToHex } from '../lsn.js';
import type { ChangeRow } from '../queries.js';
import { LeaseLost, type CdcReader, type Segment } from './core.js';

const OPERATIONS: Record<number, string> = { 1: 'Delete', 2: 'Insert', 3: 'UpdateBefore', 4: 'Update' };

/** Envelopes handed on at once from a window's merge. */
const BATCH = 256;

/**
 * Envelopes held after a checkpoint whose check has not answered, at most. Past that, the held
 * checkpoints are dropped and their rows handed on: a later checkpoint, checked in turn, covers
 * them. Held envelopes outlive the young generation's collections, so few are held (measured: 4096
 * doubled the time spent in scavenges).
 */
const HOLD = 4 * BATCH;

/** What Merger.fill() stopped for, besides the index of a cursor to wait for. */
const END = -1;
const FULL = -2;
const HELD = -3;

/** One turn of the event loop: the answers that came meanwhile are read. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** What a window's merge returns: its rows, and the check that covered its last rows if it made one. */
export interface Merged {
  rows: number;
  checked: Promise<void> | undefined;
}

/**
 * Streams the segments merged in commit order; checkpoints at transaction boundaries. Envelopes
 * leave in batches (up to BATCH, or whatever is ready before a wait for the driver), so the
 * per-item cost of an async generator is paid once per batch, not once per row. The per-row work
 * is Merger's (plain methods): this generator only hands batches on and waits.
 *
 * A checkpoint is handed on only once a check (CdcReader.check) sent after its rows were read has
 * answered. The merge does not wait for it: rows before the checkpoint go on at once, and rows
 * after it are held until it answers (so every checkpoint stands exactly where its position is),
 * or, when more than HOLD are waiting, go on without it (a later checkpoint covers them). Rows may
 * go before their checkpoint is proven: should its check fail, the reader goes back to the last
 * checkpoint handed on, and what it reads again comes after that stored position.
 */
export async function* merge(r: CdcReader, segments: Segment[], ahead: Map<string, Readable> = new Map()): AsyncGenerator<Envelope[], Merged> {
  const cursors = segments.map((s) => new RowCursor(takeRead(ahead, s) ?? openRead(r, s), s));
  closeReads(ahead);
  if (segments.length === 0) return { rows: 0, checked: undefined };
  const m = new Merger(r, segments, r.o.queryMode === 'direct', cursors);
  const stopped = () => ({ rows: m.rows, checked: undefined });
  try {
    await m.start();
    for (;;) {
      m.release();
      const at = m.fill();
      if (at === END) break;
      if (at === HELD) {
        // As much is held as may be. The merge ran on rows the driver had buffered: the check's
        // answer may be in and not yet read. Once it is, the held checkpoints go on; else without them.
        if (m.out.length > 0) {
          yield m.handOn();
          if (r.aborted) return stopped();
        }
        await turn();
        m.release();
        m.dropIfFull();
        continue;
      }
      if (at !== FULL) {
        // The driver has nothing buffered for this table: hand over what is ready, then wait.
        if (m.out.length > 0) {
          yield m.handOn();
          if (r.aborted) return stopped();
        }
        m.take(at, await m.cursors[at]!.next());
        if (m.out.length < BATCH) continue;
      }
      yield m.handOn();
      if (r.aborted) return stopped();
    }
    const checked = m.checkRest();
    await checked;
    if (m.out.length > 0) yield m.handOn();
    return { rows: m.rows, checked };
  } finally {
    m.closed = true;
    for (const c of m.cursors) c.close();
  }
}

/** A segment's change rows, from the driver. */
export function openRead(r: CdcReader, s: Segment): Readable {
  return r.q.changes(s.instance, s.from, s.to, { updateOld: r.o.updateBefore, mode: r.o.queryMode });
}

/**
 * What identifies a segment's read: the instance (its name and start: a re-created instance may
 * have the same name) and the range. The query mode and the columns are the reader's and the
 * instance's own.
 */
export function readKey(s: Segment): string {
  return `${s.instance.name} ${s.instance.startLsn === null ? '' : lsnToHex(s.instance.startLsn)} ${lsnToHex(s.from)} ${lsnToHex(s.to)}`;
}

/**
 * The read opened ahead for `s` (window() in windows.ts), taken out of `ahead`; undefined when none
 * was, or when it failed or closed meanwhile: the segment is then read anew, and a failure that
 * lasts is met (and reported) there.
 */
function takeRead(ahead: Map<string, Readable>, s: Segment): Readable | undefined {
  const key = readKey(s);
  const read = ahead.get(key);
  if (read === undefined) return undefined;
  ahead.delete(key);
  if (!read.destroyed && read.errored === null) return read;
  read.destroy();
  return undefined;
}

/** Reads opened ahead and not used: cancelled, their connections back to the pool. */
export function closeReads(reads: Map<string, Readable>): void {
  for (const read of reads.values()) read.destroy();
  reads.clear();
}

/** A checkpoint whose check has not answered yet, and the envelopes after it. */
interface Pending {
  checkpoint: Envelope;
  positions: Map<string, Buffer>;
  /** Its number in the window (1, 2, ...): a check started after it was placed covers it. */
  seq: number;
  after: Envelope[];
}

/** A window's merge: the streams' next rows, and the envelopes being built. */
class Merger {
  rows = 0;
  /** Envelopes ready to hand on: none of them waits for a check. */
  out: Envelope[] = [];
  /** Checkpoints waiting for their check, oldest first, each with what follows it. */
  private held: Pending[] = [];
  /** Checkpoints placed in this window, and how many of them an answered check covers. */
  private placed = 0;
  private verified = 0;
  /** The check under way (at most one); it settles, never rejects: a failure is kept in `failure`. */
  private checking: Promise<void> | undefined;
  closed = false;
  /** The positions of the last checkpoint in `out`: marked handed once `out` is. */
  private outPositions: Map<string, Buffer> | undefined;
  private failure: unknown;
  private heldEnvelopes = 0;
  /** Where take() puts envelopes: `out`, or after the last held checkpoint. */
  private sink: Envelope[] = this.out;
  private heads: Array<ChangeRow | null> = [];
  private sinceCheckpoint = 0;
  private prevLsn: Buffer | undefined;
  private prevHex = '';
  private commitTime: string | null = null;
  private readonly every: number;
  private readonly source: string;

  constructor(
    private readonly r: CdcReader,
    private readonly segments: Segment[],
    /** Query mode direct: rows are ordered by __$command_id within a commit. */
    private readonly direct: boolean,
    readonly cursors: RowCursor[],
  ) {
    this.every = r.o.checkpointEveryRows;
    this.source = r.o.source;
  }

  async start(): Promise<void> {
    this.heads = await Promise.all(this.cursors.map((c) => c.next()));
  }

  /**
   * Takes rows in commit order while the driver has them buffered: until a batch is ready
   * (FULL), as much is held as may be (HELD), every stream has ended (END), or the next row is a
   * stream's whose next row must be waited for (that stream's index: take() it once there).
   */
  fill(): number {
    const heads = this.heads;
    const direct = this.direct;
    for (;;) {
      let best = -1;
      for (let i = 0; i < heads.length; i++) {
        const h = heads[i];
        if (h === null || h === undefined) continue;
        if (best < 0 || compareRows(h, heads[best]!, direct) < 0) best = i;
      }
      if (best < 0) return END;
      const next = this.cursors[best]!.poll();
      if (next === undefined) return best;
      this.take(best, next);
      if (this.out.length >= BATCH) return FULL;
      if (this.heldEnvelopes >= HOLD) return HELD;
    }
  }

  /** Emits stream `i`'s head row, `next` its new head. */
  take(i: number, next: ChangeRow | null): void {
    const r = this.r;
    const row = this.heads[i]!;
    const s = this.cursors[i]!.segment;
    this.heads[i] = next;
    const lsn = row[0] as Buffer;
    if (this.prevLsn === undefined || compareLsn(this.prevLsn, lsn) !== 0) {
      // A new commit begins: the previous one is complete.
      if (this.prevLsn !== undefined && this.sinceCheckpoint >= this.every) this.place(this.prevLsn);
      this.prevLsn = lsn;
      this.prevHex = lsnToHex(lsn);
      // Every row of a commit carries its time (sql.ts COMMIT_TIME).
      this.commitTime = (row[s.layout.commitTime] as string | null | undefined) ?? null;
    }
    const op = row[2] as number;
    this.rows++;
    this.sinceCheckpoint++;
    const metadata = r.metadata(s.table, s.instance, OPERATIONS[op] ?? `Operation${op}`, op, this.prevHex, lsnToHex(row[1] as Buffer), this.commitTime);
    const unavailable = s.unavailable?.(op, s.layout.updateMask < 0 ? undefined : (row[s.layout.updateMask] as Buffer | null));
    if (unavailable !== undefined) metadata.UnavailableColumns = unavailable;
    this.sink.push({ source: this.source, type: 'cdc', data: s.map(row), metadata });
    if (this.sink !== this.out) this.heldEnvelopes++;
  }

  /** A checkpoint after the complete commit at `lsn`: held until a check sent from now on answers. */
  private place(lsn: Buffer): void {
    advanceTo(this.r, lsn);
    const p: Pending = { checkpoint: this.r.checkpoint(false), positions: new Map(this.r.emitted), seq: ++this.placed, after: [] };
    this.held.push(p);
    this.sink = p.after;
    this.sinceCheckpoint = 0;
    if (this.checking === undefined) this.startCheck();
  }

  /**
   * Sends a check covering every checkpoint placed so far. When it answers, the next one goes out
   * for those placed meanwhile (min LSNs only rise and a lost lease is not regained, so the newer
   * check also covers the older rows): one check under way at a time, however many checkpoints.
   */
  private startCheck(): void {
    const covers = this.placed;
    this.checking = this.r.check(this.segments).then(
      () => {
        this.verified = covers;
        this.checking = undefined;
        if (this.placed > covers && !this.closed && this.failure === undefined) this.startCheck();
      },
      (err: unknown) => {
        this.failure ??= err;
        this.checking = undefined;
      },
    );
  }

  /** Moves the checkpoints an answered check covers, and what follows them, to `out`; throws a failed check's error. */
  release(): void {
    if (this.failure !== undefined) throw this.failure;
    const held = this.held;
    if (held.length === 0 || held[0]!.seq > this.verified) return;
    const out = this.out;
    while (held.length > 0 && held[0]!.seq <= this.verified) {
      const p = held.shift()!;
      out.push(p.checkpoint);
      for (const e of p.after) out.push(e);
      this.heldEnvelopes -= p.after.length;
      this.outPositions = p.positions;
    }
    if (held.length === 0) this.sink = out;
  }

  /**
   * Every row is read: one check sent now covers the checkpoints still held, and the window's own
   * (returned, for window() to hand its checkpoint on; undefined when nothing was held).
   */
  checkRest(): Promise<void> | undefined {
    this.release();
    if (this.held.length === 0) return undefined;
    const covers = this.placed;
    return this.r.check(this.segments).then(() => {
      this.verified = covers;
      this.release();
    });
  }

  /** The check is slow: with HOLD envelopes held, the held checkpoints are dropped, their rows handed on without them. */
  dropIfFull(): void {
    if (this.heldEnvelopes < HOLD) return;
    const out = this.out;
    for (const p of this.held) for (const e of p.after) out.push(e);
    this.held = [];
    this.heldEnvelopes = 0;
    this.sink = out;
  }

  /** What is ready, handed on; the checkpoints among it are handed from now on (where a reconnect resumes). */
  handOn(): Envelope[] {
    // Not one more row of a table whose lease is gone.
    if (this.r.leaseLost) throw new LeaseLost();
    if (this.failure !== undefined) throw this.failure;
    if (this.outPositions !== undefined) this.r.markHanded(this.outPositions);
    this.outPositions = undefined;
    const out = this.out;
    this.out = [];
    if (this.held.length === 0) this.sink = this.out;
    return out;
  }
}

/** After a complete commit at `lsn`: every table at or before it has emitted through it. */
export function advanceTo(r: CdcReader, lsn: Buffer): void {
  for (const t of r.tables.values()) {
    const at = r.emitted.get(t.key);
    if (t.readable && compareLsn(t.from, lsn) <= 0 && (at === undefined || compareLsn(at, lsn) < 0)) r.emitted.set(t.key, lsn);
  }
}

/** Pulls rows from a driver stream without an await per row while rows are buffered. */
export class RowCursor {
  private ended = false;
  private started = false;
  private error: unknown;
  private wake: (() => void) | undefined;

  constructor(
    private readonly stream: Readable,
    readonly segment: Segment,
  ) {
    const kick = () => {
      const w = this.wake;
      this.wake = undefined;
      w?.();
    };
    stream.on('readable', kick);
    stream.on('end', () => ((this.ended = true), kick()));
    stream.on('error', (err) => {
      // The driver's request timeout runs until the first row: SQL Server was still preparing it.
      this.error = !this.started && (err as { code?: string }).code === 'ETIMEOUT' ? new FirstRowTimeout(segment.table.key, err) : err;
      kick();
    });
    stream.on('close', () => {
      // Closed without 'end' or 'error' (its connection was closed): not a complete read.
      if (!this.ended && this.error === undefined) this.error = closedEarly();
      kick();
    });
    // Events that came before these listeners do not come again: a stream that had already failed,
    // ended or closed would otherwise be waited for forever.
    if (stream.errored !== null) this.error = stream.errored;
    else if (stream.readableEnded) this.ended = true;
    else if (stream.destroyed) this.error = closedEarly();
  }

  /** The next row if the driver has one buffered, null at the end, undefined when it must be waited for. */
  poll(): ChangeRow | null | undefined {
    const before = this.segment.before;
    for (;;) {
      if (this.error !== undefined) return undefined;
      const row = this.stream.read() as ChangeRow | null;
      if (row === null) return this.ended ? null : undefined;
      // Rows the newer capture instance also has are read from it.
      this.started = true;
      if (before !== undefined && compareLsn(row[0] as Buffer, before) >= 0) continue;
      return row;
    }
  }

  async next(): Promise<ChangeRow | null> {
    for (;;) {
      const row = this.poll();
      if (row !== undefined) return row;
      if (this.error !== undefined) throw this.error;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  close(): void {
    if (!this.ended) this.stream.destroy();
  }
}

const closedEarly = () => Object.assign(new Error('the change stream closed before its end'), { code: 'ECONNCLOSED' });

/** The first row of a change read did not come within the request timeout. */
export class FirstRowTimeout extends Error {
  constructor(
    readonly table: string,
    cause: unknown,
  ) {
    super(messageOf(cause), { cause });
  }
}

/**
 * Commit order: LSN, then __$command_id (the order of operations within a transaction, read in
 * query mode direct), then seqval and operation (all the change function gives). Rows as changes()
 * gives them: LSN, seqval and operation first, __$command_id next in query mode direct.
 */
export function compareRows(a: ChangeRow, b: ChangeRow, direct: boolean): number {
  return (
    compareLsn(a[0] as Buffer, b[0] as Buffer) ||
    (direct ? (a[3] as number) - (b[3] as number) : 0) ||
    compareLsn(a[1] as Buffer, b[1] as Buffer) ||
    (a[2] as number) - (b[2] as number)
  );
}
