/**
 * Slow-consumer conformance: every stage, sink, runProvider's output and the executor, fed by a
 * producer that honours backpressure and read by a consumer that takes one chunk a tick. What the
 * producer has handed over but the consumer has not yet taken is what the pipeline holds in memory;
 * it must stay under a stated bound, however many envelopes go through.
 *
 * The bound is counted in envelopes of about 150 bytes. A stage that drops backpressure anywhere
 * lets the producer run ahead, and what it holds grows towards N.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable, type Duplex, type Readable } from 'node:stream';
import { once } from 'node:events';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { decodeEnvelopes, encodeEnvelopes, partitionByTable, route, runProvider, toFiles, type Envelope, type ProviderDefinition } from '../../lib/index.js';
import { runTask } from '../../lib/executor/executor.js';
import { FileStateStore } from '../../lib/state/state-store.js';

const N = 20_000;
const env = (i: number): Envelope => ({
  source: 'slow-consumer',
  type: 'cdc',
  data: { Id: i, Name: `row ${i}`, Note: 'x'.repeat(40) },
  metadata: { TableName: i % 2 === 0 ? 'Orders' : 'Persons', OperationType: 'Insert' },
});
const nextTick = () => new Promise<void>((r) => setImmediate(r));

/** Counts what went in and what came out; `held` is the most ever in between. */
class InFlight {
  produced = 0;
  consumed = 0;
  held = 0;
  in(n = 1): void {
    this.produced += n;
    this.held = Math.max(this.held, this.produced - this.consumed);
  }
  out(n = 1): void {
    this.consumed += n;
  }
}

/**
 * Writes N items into `w` the way a well-behaved producer does: waits for 'drain' when told to.
 * One write a tick, so that a stage which only holds back bursts written in one tick is caught.
 */
async function produce(w: Writable, item: (i: number) => unknown, meter: InFlight, end = true): Promise<void> {
  for (let i = 0; i < N; i++) {
    meter.in();
    if (!w.write(item(i))) await once(w, 'drain');
    else await nextTick();
  }
  if (end) w.end();
}

/** An input provider producing N envelopes as `produce` does (the host ends its output). */
const steadyInput = (meter: InFlight): ProviderDefinition => ({ name: 'steady', run: (ctx) => produce(ctx.output, env, meter, false) });

/** Takes one chunk every other tick (slower than the producer) until the stream ends; `count` says how many items a chunk holds. */
function consumeSlowly(r: Readable, meter: InFlight, count: (chunk: unknown) => number = () => 1): Promise<void> {
  // Piped, so each chunk comes as it was pushed (a Readable's iterator would take the whole buffer at once).
  return pipeline(r, slowSink(meter, count));
}

const lines = (chunk: unknown) => {
  const b = chunk as Buffer;
  let n = 0;
  for (let i = b.indexOf(10); i !== -1; i = b.indexOf(10, i + 1)) n++;
  return n;
};

/** A sink taking one chunk every other tick. */
const slowSink = (meter: InFlight, count: (chunk: unknown) => number = () => 1) =>
  new Writable({
    objectMode: true,
    highWaterMark: 1,
    write(chunk, _enc, cb) {
      meter.out(count(chunk));
      setImmediate(() => setImmediate(cb));
    },
  });

async function throughStage(stage: Duplex, item: (i: number) => unknown, count?: (chunk: unknown) => number): Promise<InFlight> {
  const meter = new InFlight();
  await Promise.all([produce(stage, item, meter), consumeSlowly(stage, meter, count)]);
  expect(meter.consumed).toBe(N);
  return meter;
}

describe('slow consumer: memory stays bounded everywhere', () => {
  it('encodeEnvelopes: at most 1,000 envelopes held (16 objects, one 64 KiB chunk, a 16 KiB readable buffer)', async () => {
    const meter = await throughStage(encodeEnvelopes(), env, lines);
    expect(meter.held).toBeLessThan(1_000);
  });

  it('decodeEnvelopes: at most 200 envelopes held (16 objects, a 16 KiB writable buffer)', async () => {
    const meter = await throughStage(decodeEnvelopes(), (i) => Buffer.from(`${JSON.stringify(env(i))}\n`));
    expect(meter.held).toBeLessThan(200);
  });

  it('route: at most 100 envelopes held', async () => {
    const meter = await throughStage(route(), env);
    expect(meter.held).toBeLessThan(100);
  });

  it('partitionByTable: at most 100 envelopes held in front of slow sinks', async () => {
    const meter = new InFlight();
    const p = partitionByTable({ sinkFor: () => slowSink(meter) });
    await produce(p, env, meter);
    await once(p, 'finish');
    expect(meter.consumed).toBe(N);
    expect(meter.held).toBeLessThan(100);
  });

  it('toFiles: at most 600 envelopes held (256 per file sink)', async () => {
    const meter = new InFlight();
    // What a file sink has written is what it took: its record count.
    const sinks: Array<{ stats: { records: number } }> = [];
    const files = toFiles({
      dir: mkdtempSync(join(tmpdir(), 'dstream-slow-')),
      noSync: true,
      onSink: (_d, sink) => sinks.push(sink as unknown as { stats: { records: number } }),
    });
    const written = () => sinks.reduce((n, s) => n + s.stats.records, 0);
    for (let i = 0; i < N; i++) {
      meter.in();
      meter.consumed = written();
      if (!files.write(env(i))) await once(files, 'drain');
    }
    files.end();
    await once(files, 'finish');
    expect(written()).toBe(N);
    expect(meter.held).toBeLessThan(600);
  });

  it("runProvider's output: at most 1,000 envelopes held behind a reader of stdout that takes one chunk a tick", async () => {
    const meter = new InFlight();
    const def = steadyInput(meter);
    const stdin = new PassThrough();
    const stdout = new PassThrough();
    stdin.end(`${JSON.stringify({ command: 'run', config: {}, protocol: 1 })}\n`);
    const code = runProvider(def, { stdin, stdout, stderr: new PassThrough().resume(), argv: [], env: {}, signals: null });
    // The handshake line counts as one line out, not an envelope.
    meter.consumed = -1;
    await Promise.all([consumeSlowly(stdout, meter, lines), code.then(() => stdout.end())]);
    expect(await code).toBe(0);
    expect(meter.consumed).toBe(N);
    expect(meter.held).toBeLessThan(1_000);
  });

  it('the executor: at most 3,000 envelopes held between an input and an output that takes one a tick', async () => {
    const meter = new InFlight();
    const steady = steadyInput(meter);
    const slow: ProviderDefinition = {
      name: 'slow',
      async run(ctx) {
        await pipeline(ctx.input, slowSink(meter));
      },
    };
    const summary = await runTask(
      { name: 'slow', type: 'providers', input: { provider: 'steady', config: {} }, output: { provider: 'slow', config: {} }, file: 'dstream.hcl', line: 1 },
      { builtins: { steady, slow } as never, store: new FileStateStore(mkdtempSync(join(tmpdir(), 'dstream-state-'))) },
    );
    expect(summary.rows).toBe(N);
    expect(meter.consumed).toBe(N);
    expect(meter.held).toBeLessThan(3_000);
  }, 30_000);
});
