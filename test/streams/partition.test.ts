import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { checkpoint, ErrorCodes, partitionByTable, type CheckpointEnvelope, type Envelope } from '../../lib/index.js';
import { memorySink, tick } from '../support/streams.js';

const row = (dest: string, n: number): Envelope => ({ data: { n }, metadata: { TableName: dest, Destination: dest } });

/** A sink whose write callbacks the test completes by hand. */
function manualSink(name: string, log: string[]) {
  const pending: Array<() => void> = [];
  const sink = new Writable({
    objectMode: true,
    highWaterMark: 1000,
    write(chunk: Envelope, _e, cb) {
      pending.push(() => {
        log.push(`${name}:${(chunk.data as { n: number }).n}`);
        cb();
      });
    },
  });
  return { sink, ackOne: () => pending.shift()?.(), pending };
}

describe('partitionByTable', () => {
  it('gives each destination its own sink, created on first use, with order kept per destination', async () => {
    const sinks = new Map<string, ReturnType<typeof memorySink>>();
    const input: Envelope[] = [];
    for (let i = 0; i < 300; i++) input.push(row(['A', 'B', 'C'][i % 3]!, i));
    const p = partitionByTable({
      sinkFor: (d) => {
        const s = memorySink({ delayMs: d === 'B' ? 1 : 0 });
        sinks.set(d, s);
        return s;
      },
    });
    await pipeline(Readable.from(input), p);
    expect([...sinks.keys()]).toEqual(['A', 'B', 'C']);
    for (const [d, s] of sinks) {
      expect(s.items).toEqual(input.filter((e) => e.metadata?.Destination === d));
      expect(s.writableFinished).toBe(true);
    }
  });

  it('stalls the input when one partition stops draining: memory stays bounded (K >> highWaterMark)', async () => {
    const K = 100_000;
    let pulled = 0;
    function* source() {
      for (let i = 0; i < K; i++) {
        pulled++;
        yield row(i % 2 === 0 ? 'stuck' : 'fast', i);
      }
    }
    const stuck = new Writable({ objectMode: true, highWaterMark: 4, write() {} }); // never calls back
    const fast = memorySink();
    const p = partitionByTable({ sinkFor: (d) => (d === 'stuck' ? stuck : fast), highWaterMark: 8 });
    const done = pipeline(Readable.from(source(), { highWaterMark: 8 }), p).catch((e) => e);
    await tick(200);
    // Bounded by the high-water marks (source 8 + partitioner 8 + stuck 4 + one in flight each),
    // nowhere near K.
    expect(pulled).toBeLessThan(64);
    expect(stuck.writableLength).toBeLessThanOrEqual(5);
    expect(fast.items.length).toBeLessThan(32);
    p.destroy();
    await done;
  });

  it('releases a checkpoint only after every envelope written before it, in every partition, is acknowledged', async () => {
    const log: string[] = [];
    const a = manualSink('A', log);
    const b = manualSink('B', log);
    const released: unknown[] = [];
    const p = partitionByTable({ sinkFor: (d) => (d === 'A' ? a.sink : b.sink) });
    p.on('checkpoint', (cp: CheckpointEnvelope) => {
      released.push(cp.data.position);
      log.push(`cp:${cp.data.position}`);
    });
    p.write(row('A', 1));
    p.write(row('B', 2));
    p.write(checkpoint(1));
    p.write(row('A', 3));
    p.write(checkpoint(2));
    await tick();
    expect(released).toEqual([]);
    a.ackOne(); // A:1
    await tick();
    expect(released).toEqual([]); // B:2 still pending
    a.ackOne(); // A:3, acked before B:2
    await tick();
    expect(released).toEqual([]); // checkpoint 1 waits for B:2 and checkpoint 2 waits for checkpoint 1
    b.ackOne(); // B:2
    await tick();
    expect(released).toEqual([1, 2]);
    expect(log).toEqual(['A:1', 'A:3', 'B:2', 'cp:1', 'cp:2']);
    p.end();
  });

  it('never releases a checkpoint before its rows, under random acknowledgement delays (property)', async () => {
    for (let seed = 1; seed <= 20; seed++) {
      let s = seed;
      const rand = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      const acked = new Set<number>();
      const input: Envelope[] = [];
      const before = new Map<number, number[]>();
      const rowsSoFar: number[] = [];
      for (let i = 0; i < 200; i++) {
        if (rand() < 0.15) {
          before.set(i, [...rowsSoFar]);
          input.push(checkpoint(i));
        } else {
          rowsSoFar.push(i);
          input.push(row(`Q${Math.floor(rand() * 4)}`, i));
        }
      }
      const violations: string[] = [];
      const order: number[] = [];
      const p = partitionByTable({
        sinkFor: () =>
          new Writable({
            objectMode: true,
            highWaterMark: 3,
            write(e: Envelope, _enc, cb) {
              setTimeout(() => {
                acked.add((e.data as { n: number }).n);
                cb();
              }, Math.floor(rand() * 3));
            },
          }),
        onCheckpoint: (cp) => {
          const pos = cp.data.position as number;
          order.push(pos);
          for (const r of before.get(pos)!) if (!acked.has(r)) violations.push(`seed ${seed}: checkpoint ${pos} before row ${r}`);
        },
      });
      await pipeline(Readable.from(input), p);
      expect(violations).toEqual([]);
      expect(order).toEqual([...before.keys()]);
    }
  });

  it('releases a checkpoint at once when nothing is pending, and before finish when rows precede it', async () => {
    const released: unknown[] = [];
    const p = partitionByTable({ sinkFor: () => memorySink({ delayMs: 2 }), onCheckpoint: (cp) => void released.push(cp.data.position) });
    p.write(checkpoint('first'));
    expect(released).toEqual(['first']);
    p.write(row('A', 1));
    p.write(checkpoint('last'));
    let finished = false;
    p.on('finish', () => {
      finished = true;
      expect(released).toEqual(['first', 'last']);
    });
    p.end();
    await new Promise((r) => p.on('finish', r));
    expect(finished).toBe(true);
  });

  it('waits for an async onCheckpoint before releasing the next one, and before finishing', async () => {
    const events: string[] = [];
    const p = partitionByTable({
      sinkFor: () => memorySink(),
      onCheckpoint: async (cp) => {
        events.push(`start ${cp.data.position}`);
        await tick(5);
        events.push(`end ${cp.data.position}`);
      },
    });
    await pipeline(Readable.from([row('A', 1), checkpoint(1), row('A', 2), checkpoint(2)]), p);
    expect(events).toEqual(['start 1', 'end 1', 'start 2', 'end 2']);
  });

  it("propagates a partition's error naming its destination and destroys the other partitions", async () => {
    const healthy = memorySink({ delayMs: 5 });
    const broken = new Writable({
      objectMode: true,
      write(_c, _e, cb) {
        cb(new Error('connection reset'));
      },
    });
    const p = partitionByTable({ sinkFor: (d) => (d === 'bad' ? broken : healthy) });
    const released: unknown[] = [];
    p.on('checkpoint', (c) => released.push(c));
    const err = await pipeline(Readable.from([row('good', 1), row('bad', 2), checkpoint(9), row('good', 3)]), p).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.PARTITION_FAILED);
    expect(err.message).toBe('partition "bad" failed: connection reset');
    expect(healthy.destroyed).toBe(true);
    expect(released).toEqual([]); // a failed write never lets a checkpoint through
  });

  it('counts acknowledgements from sinks that report durability with ack events, not write callbacks', async () => {
    const { DURABLE_ACKS } = await import('../../lib/index.js');
    let sink!: Writable & { [k: symbol]: unknown };
    const released: unknown[] = [];
    const p = partitionByTable({
      sinkFor: () => {
        // Calls back at once (to keep records flowing) and acknowledges later, as a batching sink does.
        sink = new Writable({ objectMode: true, write: (_c, _e, cb) => cb() }) as typeof sink;
        sink[DURABLE_ACKS] = true;
        return sink;
      },
      onCheckpoint: (cp) => void released.push(cp.data.position),
    });
    p.write(row('A', 1));
    p.write(row('A', 2));
    p.write(checkpoint('c'));
    await tick(5);
    expect(released).toEqual([]); // write callbacks came, but nothing is durable yet
    sink.emit('ack', 1);
    await tick();
    expect(released).toEqual([]);
    sink.emit('ack', 1);
    await tick();
    expect(released).toEqual(['c']);
    p.end();
  });

  it('fails when such a sink finishes with records it never acknowledged', async () => {
    const { DURABLE_ACKS } = await import('../../lib/index.js');
    const err = await pipeline(
      Readable.from([row('A', 1), row('A', 2)]),
      partitionByTable({
        sinkFor: () => Object.assign(new Writable({ objectMode: true, write: (_c, _e, cb) => cb() }), { [DURABLE_ACKS]: true }),
      }),
    ).catch((e) => e);
    expect(err.message).toBe('partition "A" failed: sink finished with 2 of 2 records unacknowledged');
  });

  it('refuses more than maxPartitions destinations', async () => {
    const p = partitionByTable({ sinkFor: () => memorySink(), maxPartitions: 2 });
    const err = await pipeline(Readable.from([row('A', 1), row('B', 2), row('C', 3)]), p).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.TOO_MANY_PARTITIONS);
    expect(err.message).toMatch(/destination "C" would be partition 3, over maxPartitions \(2\)/);
  });

  it('refuses an envelope with no destination and no table', async () => {
    const err = await pipeline(Readable.from([{ data: 1, metadata: {} }]), partitionByTable({ sinkFor: () => memorySink() })).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.INVALID_RECORD);
    expect(err.message).toMatch(/put route\(\) before partitionByTable/);
  });

  it('fails when a sink closes before finishing', async () => {
    const quitter = new Writable({
      objectMode: true,
      write(_c, _e, cb) {
        cb();
        quitter.destroy();
      },
    });
    const err = await pipeline(Readable.from([row('A', 1), row('A', 2)]), partitionByTable({ sinkFor: () => quitter })).catch((e) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(/partition "A" failed: sink closed before it finished/);
  });

  describe('checkpoints()', () => {
    const EVENTS = ['checkpoint', 'finish', 'close', 'error'] as const;
    const listeners = (p: Writable) => EVENTS.map((e) => p.listenerCount(e));

    it('leaving the loop removes its listeners', async () => {
      const p = partitionByTable({ sinkFor: () => memorySink() });
      const before = listeners(p);
      p.write(row('A', 1));
      p.write(checkpoint('after-1'));
      for await (const cp of p.checkpoints()) {
        expect(cp.data.position).toBe('after-1');
        break;
      }
      expect(listeners(p)).toEqual(before);
      p.end();
    });

    it('called after the partitioner finished, ends at once', async () => {
      const p = partitionByTable({ sinkFor: () => memorySink() });
      await pipeline(Readable.from([row('A', 1), checkpoint('after-1')]), p);
      const it = p.checkpoints();
      const next = await Promise.race([it.next(), new Promise((r) => setImmediate(() => r('still waiting')))]);
      expect(next).toEqual({ value: undefined, done: true });
    });

    it('holds its queue bounded: a reader that does not read stalls the partitioner', async () => {
      const p = partitionByTable({ sinkFor: () => memorySink(), highWaterMark: 16 });
      const it = p.checkpoints();
      let accepted = 0;
      while (accepted < 20_000 && p.write(accepted % 2 === 0 ? row('A', accepted) : checkpoint(accepted))) accepted++;
      // Unbounded, every write would be accepted; held, the checkpoints wait for the reader.
      expect(accepted).toBeLessThan(3_000);
      // Reading lets it go on, in order, and nothing is lost.
      const drained = new Promise((r) => p.once('drain', r));
      const first = await it.next();
      expect(first.value?.data.position).toBe(1);
      let last = 1;
      for (let n = 0; n < 100; n++) {
        const cp = await it.next();
        expect(cp.value!.data.position).toBe(last + 2);
        last = cp.value!.data.position as number;
      }
      await drained;
      p.destroy();
    });
  });
});
