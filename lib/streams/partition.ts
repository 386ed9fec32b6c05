/**
 * partitionByTable(): fans envelopes out to one lazily created Writable per destination.
 *
 * Order is kept per destination because each destination has exactly one sink and writes to it
 * are issued in arrival order. Backpressure: a write is acknowledged upstream only when the
 * partition it went to accepted it without asking to wait, or after its 'drain', so one stalled
 * partition stalls the input and memory stays bounded by the high-water marks.
 *
 * Checkpoint markers are barriers. When a marker arrives it records, for each partition, how many
 * writes had been issued; it is released (the 'checkpoint' event and `onCheckpoint`) once each of
 * those writes has been acknowledged by its sink, and markers are released in order.
 *
 * A sink acknowledges a record in one of two ways, and that contract is what makes checkpoints
 * safe. A plain Writable acknowledges by calling the write callback, so it must call back only
 * when the record is durable (sent, fsynced). A batching sink that needs to call back early, to
 * keep records flowing while a batch fills, sets `sink[DURABLE_ACKS] = true` and emits
 * `'ack'` with a count each time that many more records, in write order, became durable.
 */
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { DstreamError, ErrorCodes, invalidOption, isDstreamError } from '../errors.js';
import { isCheckpoint, type CheckpointEnvelope, type Envelope } from '../envelope/types.js';
import { checkOptions } from '../options.js';
import { DEFAULT_SCHEMA, qualifiedName, tableKey, tableOfMetadata } from '../envelope/table.js';
import type { Listen, WritableEvents } from '../events.js';

/** Marks a sink that reports durability with 'ack' events (count) rather than write callbacks. */
export const DURABLE_ACKS = Symbol.for('dstream.durableAcks');

/** Checkpoints a checkpoints() reader may leave unread before releases wait for it. */
const CHECKPOINT_QUEUE = 64;
/** Checkpoints written but not yet released before the input waits. */
const MAX_PENDING_CHECKPOINTS = 1024;

export interface PartitionOptions {
  /** Makes the sink of a destination; called once per destination, on its first envelope. */
  sinkFor: (destination: string) => Writable;
  /** Refuse to open more partitions than this. Default 1000. */
  maxPartitions?: number;
  /** The partition key of an envelope. Default: `metadata.Destination`, else the table (`Orders`, `sales.Orders`). */
  keyOf?: (envelope: Envelope) => string | undefined;
  /** Called, in order, with each checkpoint once everything before it is acknowledged. May return a promise. */
  onCheckpoint?: (checkpoint: CheckpointEnvelope) => void | Promise<void>;
  highWaterMark?: number;
}

interface Partition {
  readonly name: string;
  readonly sink: Writable;
  /** True when the sink acknowledges with 'ack' events instead of write callbacks. */
  readonly ackEvents: boolean;
  written: number;
  acked: number;
}

interface Barrier {
  readonly marker: CheckpointEnvelope;
  readonly waits: Array<[Partition, number]>;
}

export interface PartitionStats {
  partitions: Record<string, { written: number; acked: number }>;
  checkpointsReleased: number;
  checkpointsPending: number;
}

/**
 * The default partition key: `metadata.Destination`, else the table: its name for schema dbo,
 * `schema.name` otherwise (so dbo.Orders and sales.Orders get their own sinks), and one partition
 * for names that differ only in case (one table, as SQL Server compares them), named as first seen.
 */
function defaultKey(): (env: Envelope) => string | undefined {
  const names = new Map<string, string>();
  return (env) => {
    const m = env.metadata;
    if (typeof m?.Destination === 'string' && m.Destination.length > 0) return m.Destination;
    const table = tableOfMetadata(m);
    if (table === undefined) return undefined;
    const folded = tableKey({ ...table, database: undefined });
    let name = names.get(folded);
    if (name === undefined) {
      name = (table.schema ?? DEFAULT_SCHEMA).toLowerCase() === DEFAULT_SCHEMA ? table.table : qualifiedName(table);
      names.set(folded, name);
    }
    return name;
  };
}

/** `partitionByTable()`'s events besides a Writable's: `'partition'` with the key of each new partition; `'checkpoint'` with each checkpoint released (its rows acknowledged by every sink). */
export interface PartitionerEvents {
  partition: [key: string];
  checkpoint: [checkpoint: CheckpointEnvelope];
}

export interface Partitioner {
  on: Listen<PartitionerEvents, this, WritableEvents>;
  once: Listen<PartitionerEvents, this, WritableEvents>;
  off: Listen<PartitionerEvents, this, WritableEvents>;
}

export class Partitioner extends Writable {
  private readonly sinkFor: (destination: string) => Writable;
  private readonly maxPartitions: number;
  private readonly keyOf: (envelope: Envelope) => string | undefined;
  private readonly onCheckpoint: PartitionOptions['onCheckpoint'];
  private readonly partitions = new Map<string, Partition>();
  private readonly barriers: Barrier[] = [];
  private releasing = false;
  private released = 0;
  private finalCallback: ((err?: Error | null) => void) | null = null;
  /** Readers of checkpoints(): a full one holds releases back. */
  private readonly readers = new Set<{ full(): boolean }>();
  /** The write callback of a checkpoint held back while too many barriers wait. */
  private heldCheckpoint: (() => void) | null = null;

  constructor(options: PartitionOptions) {
    super({ objectMode: true, highWaterMark: options.highWaterMark ?? 16 });
    if (typeof options?.sinkFor !== 'function') throw invalidOption('partitionByTable needs sinkFor(destination) => Writable');
    const max = options.maxPartitions ?? 1000;
    if (!Number.isInteger(max) || max < 1) throw invalidOption(`maxPartitions must be a positive integer; got ${max}`);
    this.sinkFor = options.sinkFor;
    this.maxPartitions = max;
    this.keyOf = options.keyOf ?? defaultKey();
    this.onCheckpoint = options.onCheckpoint;
  }

  get stats(): PartitionStats {
    const partitions: PartitionStats['partitions'] = {};
    for (const p of this.partitions.values()) partitions[p.name] = { written: p.written, acked: p.acked };
    return { partitions, checkpointsReleased: this.released, checkpointsPending: this.barriers.length };
  }

  override _write(env: Envelope, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (isCheckpoint(env)) {
      const waits: Array<[Partition, number]> = [];
      for (const p of this.partitions.values()) if (p.acked < p.written) waits.push([p, p.written]);
      this.barriers.push({ marker: env, waits });
      this.release();
      // Checkpoints not yet released are memory too: past a bound, the input waits for releases.
      if (this.barriers.length >= MAX_PENDING_CHECKPOINTS) this.heldCheckpoint = () => callback();
      else callback();
      return;
    }
    let key: string | undefined;
    try {
      key = this.keyOf(env);
    } catch (err) {
      // A key that cannot be made (two tables for one destination) fails the stream, not the process.
      callback(err as Error);
      return;
    }
    if (key === undefined) {
      callback(
        new DstreamError(
          ErrorCodes.INVALID_RECORD,
          'envelope has neither metadata.Destination nor metadata.TableName; put route() before partitionByTable()',
        ),
      );
      return;
    }
    let p = this.partitions.get(key);
    if (p === undefined) {
      try {
        p = this.open(key);
      } catch (err) {
        callback(err as Error);
        return;
      }
    }
    const part = p;
    part.written++;
    const ok = part.sink.write(env, (err) => {
      if (err || part.ackEvents) return; // errors are reported once, through the sink's 'error' event
      this.acknowledge(part, 1);
    });
    if (ok) callback();
    else part.sink.once('drain', () => callback());
  }

  override _final(callback: (err?: Error | null) => void): void {
    const all = [...this.partitions.values()];
    for (const p of all) p.sink.end();
    Promise.all(all.map((p) => finished(p.sink, { readable: false }))).then(
      () => {
        const short = all.find((p) => p.acked < p.written);
        if (short !== undefined) {
          callback(partitionError(short.name, new Error(`sink finished with ${short.written - short.acked} of ${short.written} records unacknowledged`)));
          return;
        }
        this.finalCallback = callback;
        this.release();
      },
      (err: Error) => callback(err),
    );
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    for (const p of this.partitions.values()) if (!p.sink.destroyed) p.sink.destroy();
    callback(err);
  }

  private open(key: string): Partition {
    if (this.partitions.size >= this.maxPartitions) {
      throw new DstreamError(
        ErrorCodes.TOO_MANY_PARTITIONS,
        `destination "${key}" would be partition ${this.partitions.size + 1}, over maxPartitions (${this.maxPartitions}); ` +
          'filter tables with include/exclude or raise maxPartitions',
        { details: { destination: key, maxPartitions: this.maxPartitions } },
      );
    }
    const sink = this.sinkFor(key);
    if (!(sink instanceof Writable) && typeof (sink as Writable | undefined)?.write !== 'function') {
      throw invalidOption(`sinkFor("${key}") did not return a Writable`);
    }
    const ackEvents = (sink as Writable & { [DURABLE_ACKS]?: boolean })[DURABLE_ACKS] === true;
    const p: Partition = { name: key, sink, ackEvents, written: 0, acked: 0 };
    if (ackEvents) sink.on('ack', (n: number) => this.acknowledge(p, n));
    sink.on('error', (err: Error) => this.destroy(partitionError(key, err)));
    sink.on('close', () => {
      if (!this.destroyed && !sink.writableFinished) {
        this.destroy(partitionError(key, new Error('sink closed before it finished')));
      }
    });
    this.partitions.set(key, p);
    this.emit('partition', key);
    return p;
  }

  private acknowledge(p: Partition, n: number): void {
    p.acked += n;
    if (p.acked > p.written) {
      this.destroy(partitionError(p.name, new Error(`sink acknowledged ${p.acked} records but was given ${p.written}`)));
      return;
    }
    if (this.barriers.length > 0) this.release();
  }

  /**
   * The acknowledged checkpoints, in order, from now on: ends when the partitioner finishes (at
   * once if it already has), throws when it fails. The same checkpoints as the 'checkpoint' event,
   * for `for await`. Its queue is bounded: while it holds CHECKPOINT_QUEUE checkpoints nobody has
   * read, no further checkpoint is released and the input stalls (backpressure, not memory).
   * Leaving the loop (`return()`) removes its listeners.
   */
  checkpoints(): AsyncIterableIterator<CheckpointEnvelope> {
    const queue: CheckpointEnvelope[] = [];
    let done = this.writableFinished || this.closed;
    let failure: Error | null = this.errored;
    let wake: (() => void) | null = null;
    const poke = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    const onCheckpoint = (cp: CheckpointEnvelope) => {
      queue.push(cp);
      poke();
    };
    const onEnd = () => {
      done = true;
      poke();
    };
    const onError = (err: Error) => {
      failure = err;
      poke();
    };
    const reader = { full: () => queue.length >= CHECKPOINT_QUEUE };
    const detach = () => {
      this.off('checkpoint', onCheckpoint);
      this.off('finish', onEnd);
      this.off('close', onEnd);
      this.off('error', onError);
      this.readers.delete(reader);
      this.release();
    };
    if (!done && failure === null) {
      this.on('checkpoint', onCheckpoint);
      this.once('finish', onEnd);
      this.once('close', onEnd);
      this.once('error', onError);
      this.readers.add(reader);
    }
    const next = async (): Promise<IteratorResult<CheckpointEnvelope>> => {
      for (;;) {
        if (queue.length > 0) {
          const value = queue.shift()!;
          // Room again: what was held back for this reader may go on.
          if (queue.length === CHECKPOINT_QUEUE - 1) this.release();
          return { value, done: false };
        }
        if (failure !== null) {
          detach();
          throw failure;
        }
        if (done) {
          detach();
          return { value: undefined, done: true };
        }
        await new Promise<void>((r) => (wake = r));
      }
    };
    const it: AsyncIterableIterator<CheckpointEnvelope> = {
      next,
      return: async () => {
        detach();
        queue.length = 0;
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  private readerFull(): boolean {
    for (const r of this.readers) if (r.full()) return true;
    return false;
  }

  /** Releases every leading barrier whose writes are all acknowledged, one at a time. */
  private release(): void {
    while (!this.releasing && this.barriers.length > 0 && !this.readerFull() && this.barriers[0]!.waits.every(([p, n]) => p.acked >= n)) {
      const { marker } = this.barriers.shift()!;
      this.released++;
      this.emit('checkpoint', marker);
      if (this.onCheckpoint === undefined) continue;
      let done: void | Promise<void>;
      try {
        done = this.onCheckpoint(marker);
      } catch (err) {
        this.destroy(err as Error);
        return;
      }
      if (done !== undefined && typeof (done as Promise<void>).then === 'function') {
        this.releasing = true;
        (done as Promise<void>).then(
          () => {
            this.releasing = false;
            this.release();
          },
          (err: Error) => this.destroy(err),
        );
        return;
      }
    }
    if (this.heldCheckpoint !== null && this.barriers.length < MAX_PENDING_CHECKPOINTS) {
      const cb = this.heldCheckpoint;
      this.heldCheckpoint = null;
      cb();
    }
    if (this.finalCallback !== null && this.barriers.length === 0 && !this.releasing) {
      const cb = this.finalCallback;
      this.finalCallback = null;
      cb();
    }
  }
}

function partitionError(destination: string, err: Error): Error {
  if (isDstreamError(err)) return err;
  return new DstreamError(ErrorCodes.PARTITION_FAILED, `partition "${destination}" failed: ${err.message}`, {
    cause: err,
    details: { destination },
  });
}

/** A Writable that fans envelopes out to one sink per destination, with checkpoint barriers. */
export function partitionByTable(options: PartitionOptions): Partitioner {
  checkOptions('partitionByTable', options);
  return new Partitioner(options);
}
