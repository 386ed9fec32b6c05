/**
 * A window's change streams, one per table and capture instance, merged in commit order into
 * batches of envelopes, with checkpoints at transaction boundaries.
 */
import type { Readable } from 'node:stream';
import type { Envelope } from '../../../envelope/types.js';
import { messageOf } from '../../../errors.js';
import { compareLsn, lsnToHex } from '../lsn.js';
import type { DriverChangeRow } from '../queries.js';
import { LeaseLost, type CdcReader, type Segment } from './core.js';

const OPERATIONS: Record<number, string> = { 1: 'Delete', 2: 'Insert', 3: 'UpdateBefore', 4: 'Update' };

/** Envelopes handed on at once from a window's merge. */
const BATCH = 256;

/**
 * Streams the segments merged in commit order; checkpoints at transaction boundaries. Envelopes
 * leave in batches (up to BATCH, or whatever is ready before a wait for the driver), so the
 * per-item cost of an async generator is paid once per batch, not once per row.
 */
export async function* merge(r: CdcReader, segments: Segment[]): AsyncGenerator<Envelope[], number> {
  if (segments.length === 0) return 0;
  const read = { updateOld: r.o.updateBefore, mode: r.o.queryMode };
  const cursors = segments.map((s) => new RowCursor(r.q.changes(s.instance, s.from, s.to, read), s));
  const every = r.o.checkpointEveryRows;
  const source = r.o.source;
  let rows = 0;
  let sinceCheckpoint = 0;
  let prevLsn: Buffer | undefined;
  let prevHex = '';
  let commitTime: string | null = null;
  let batch: Envelope[] = [];
  // The positions of the last checkpoint in `batch`: handed on only once the batch is yielded.
  let batchPositions: Map<string, Buffer> | undefined;
  // Its cleanup check, sent when the checkpoint was made (every row it covers had been read by
  // then), so the merge goes on while the statement runs.
  let batchCleanupCheck: Promise<void> | undefined;
  const handOn = async () => {
    // Not one more row of a table whose lease is gone.
    if (r.leaseLost) throw new LeaseLost();
    if (batchPositions !== undefined) await r.verify(batchPositions, segments, batchCleanupCheck);
    batchPositions = undefined;
    batchCleanupCheck = undefined;
    const out = batch;
    batch = [];
    return out;
  };
  try {
    const heads: Array<DriverChangeRow | null> = await Promise.all(cursors.map((c) => c.next()));
    for (;;) {
      let best = -1;
      for (let i = 0; i < heads.length; i++) {
        const h = heads[i];
        if (h === null || h === undefined) continue;
        if (best < 0 || compareRows(h, heads[best]!) < 0) best = i;
      }
      if (best < 0) break;
      const row = heads[best]!;
      const c = cursors[best]!;
      let next = c.poll();
      if (next === undefined) {
        // The driver has nothing buffered for this table: hand over what is ready, then wait.
        if (batch.length > 0) {
          yield await handOn();
          if (r.aborted) return rows;
        }
        next = await c.next();
      }
      heads[best] = next;
      if (prevLsn === undefined || !prevLsn.equals(row.__$start_lsn)) {
        // A new commit begins: the previous one is complete.
        if (prevLsn !== undefined && sinceCheckpoint >= every) {
          advanceTo(r, prevLsn);
          batch.push(r.checkpoint(false));
          batchPositions = new Map(r.emitted);
          batchCleanupCheck = r.cleanupCheck(segments);
          // Awaited at hand-on; a failure before then must not go unhandled.
          batchCleanupCheck.catch(() => undefined);
          sinceCheckpoint = 0;
        }
        prevLsn = row.__$start_lsn;
        prevHex = lsnToHex(prevLsn);
        // Every row of a commit carries its time (sql.ts COMMIT_TIME).
        commitTime = row.__$commit_time ?? null;
      }
      const s = c.segment;
      const op = row.__$operation;
      rows++;
      sinceCheckpoint++;
      const metadata = r.metadata(s.table, s.instance, OPERATIONS[op] ?? `Operation${op}`, op, prevHex, lsnToHex(row.__$seqval), commitTime);
      const unavailable = s.unavailable?.(row);
      if (unavailable !== undefined) metadata.UnavailableColumns = unavailable;
      batch.push({ source, type: 'cdc', data: s.map(row), metadata });
      if (batch.length >= BATCH) {
        yield await handOn();
        if (r.aborted) return rows;
      }
    }
    if (batch.length > 0) yield await handOn();
    return rows;
  } finally {
    for (const c of cursors) c.close();
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
  poll(): DriverChangeRow | null | undefined {
    const before = this.segment.before;
    for (;;) {
      if (this.error !== undefined) return undefined;
      const row = this.stream.read() as DriverChangeRow | null;
      if (row === null) return this.ended ? null : undefined;
      // Rows the newer capture instance also has are read from it.
      this.started = true;
      if (before !== undefined && compareLsn(row.__$start_lsn, before) >= 0) continue;
      return row;
    }
  }

  async next(): Promise<DriverChangeRow | null> {
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
 * query mode direct), then seqval and operation (all the change function gives).
 */
export function compareRows(a: DriverChangeRow, b: DriverChangeRow): number {
  return Buffer.compare(a.__$start_lsn, b.__$start_lsn) || (a.__$command_id ?? 0) - (b.__$command_id ?? 0) || Buffer.compare(a.__$seqval, b.__$seqval) || a.__$operation - b.__$operation;
}
