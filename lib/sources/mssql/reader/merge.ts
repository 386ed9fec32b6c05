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

/** What Merger.fill() stopped for, besides the index of a cursor to wait for. */
const END = -1;
const FULL = -2;

/**
 * Streams the segments merged in commit order; checkpoints at transaction boundaries. Envelopes
 * leave in batches (up to BATCH, or whatever is ready before a wait for the driver), so the
 * per-item cost of an async generator is paid once per batch, not once per row. The per-row work
 * is Merger's (plain methods): this generator only hands batches on and waits.
 */
export async function* merge(r: CdcReader, segments: Segment[]): AsyncGenerator<Envelope[], number> {
  if (segments.length === 0) return 0;
  const read = { updateOld: r.o.updateBefore, mode: r.o.queryMode };
  const m = new Merger(r, segments, r.o.queryMode === 'direct', segments.map((s) => new RowCursor(r.q.changes(s.instance, s.from, s.to, read), s)));
  const handOn = async () => {
    // Not one more row of a table whose lease is gone.
    if (r.leaseLost) throw new LeaseLost();
    if (m.batchPositions !== undefined) await r.verify(m.batchPositions, segments, m.batchCleanupCheck);
    m.batchPositions = undefined;
    m.batchCleanupCheck = undefined;
    const out = m.batch;
    m.batch = [];
    return out;
  };
  try {
    await m.start();
    for (;;) {
      const at = m.fill();
      if (at === END) break;
      if (at !== FULL) {
        // The driver has nothing buffered for this table: hand over what is ready, then wait.
        if (m.batch.length > 0) {
          yield await handOn();
          if (r.aborted) return m.rows;
        }
        m.take(at, await m.cursors[at]!.next());
        if (m.batch.length < BATCH) continue;
      }
      yield await handOn();
      if (r.aborted) return m.rows;
    }
    if (m.batch.length > 0) yield await handOn();
    return m.rows;
  } finally {
    for (const c of m.cursors) c.close();
  }
}

/** A window's merge: the streams' next rows, and the batch of envelopes being built. */
class Merger {
  rows = 0;
  batch: Envelope[] = [];
  /** The positions of the last checkpoint in `batch`: handed on only once the batch is yielded. */
  batchPositions: Map<string, Buffer> | undefined;
  /**
   * Its cleanup check, sent when the checkpoint was made (every row it covers had been read by
   * then), so the merge goes on while the statement runs.
   */
  batchCleanupCheck: Promise<void> | undefined;
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
   * Takes rows in commit order while the driver has them buffered: until the batch is full
   * (FULL), every stream has ended (END), or the next row is a stream's whose next row must be
   * waited for (that stream's index: take() it once there).
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
      if (this.batch.length >= BATCH) return FULL;
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
      if (this.prevLsn !== undefined && this.sinceCheckpoint >= this.every) {
        advanceTo(r, this.prevLsn);
        this.batch.push(r.checkpoint(false));
        this.batchPositions = new Map(r.emitted);
        this.batchCleanupCheck = r.cleanupCheck(this.segments);
        // Awaited at hand-on; a failure before then must not go unhandled.
        this.batchCleanupCheck.catch(() => undefined);
        this.sinceCheckpoint = 0;
      }
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
    this.batch.push({ source: this.source, type: 'cdc', data: s.map(row), metadata });
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
      if (!this.ended && this.error === undefined) this.error = Object.assign(new Error('the change stream closed before its end'), { code: 'ECONNCLOSED' });
      kick();
    });
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
