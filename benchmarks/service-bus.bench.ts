/**
 * Delivery into the AMQP test broker, run in a separate process: dstream's batching sink against
 * the naive way (`sendMessages` per message, awaited), 400 B and 4 KB messages, 1, 3 and 20 queues;
 * the mean batch fill when input is abundant; and memory while 1M envelopes wait behind a broker
 * that accepts one batch a second; and the CPU time of this process (the broker's not included)
 * per 100,000 CDC-shaped messages delivered to 3 queues, which bounds the rate one core can deliver.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { ServiceBusClient } from '@azure/service-bus';
import { toServiceBus, type ServiceBusSink } from '../dist/lib/index.js';
import { race, type BenchResult, type Contender, type Measurement, type Target } from './harness.js';

const TSX = fileURLToPath(new URL('./node_modules/tsx/dist/cli.mjs', import.meta.url));
const BROKER = fileURLToPath(new URL('./broker-process.ts', import.meta.url));

async function startBroker(queues: number, delayMs = 0): Promise<{ cs: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [TSX, BROKER, String(queues), String(delayMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(child.stdout!, 'data')) as [Buffer];
  const { port } = JSON.parse(line.toString()) as { port: number };
  return { cs: `Endpoint=sb://127.0.0.1:${port};SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true`, child };
}

function* envelopes(count: number, queues: number, bytes: number): Generator<Record<string, unknown>> {
  const pad = 'x'.repeat(Math.max(0, bytes - 260));
  for (let i = 0; i < count; i++) {
    yield {
      source: 'mssql-cdc',
      type: 'cdc',
      data: { Id: i, Name: `row ${i}`, Pad: pad },
      metadata: { TableName: `T${i % queues}`, OperationType: 'Insert', LSN: `0x${i.toString(16).padStart(20, '0')}`, Seq: '0x01' },
    };
  }
}

/** Envelopes as mssql-cdc makes them: every metadata key, a few typed columns, 3 tables. */
function* cdcEnvelopes(count: number): Generator<Record<string, unknown>> {
  for (let i = 0; i < count; i++) {
    yield {
      source: 'mssql-cdc',
      type: 'cdc',
      data: { Id: i, CustomerId: i % 977, Status: 'shipped', Total: 12.5 + (i % 100), Note: `order ${i}`, Updated: '2026-01-01T00:00:00.000Z' },
      metadata: {
        TableName: `T${i % 3}`,
        Schema: 'dbo',
        Database: 'shop',
        OperationType: 'Update',
        OperationID: 4,
        LSN: `0x${Math.floor(i / 4).toString(16).toUpperCase().padStart(20, '0')}`,
        Seq: `0x${i.toString(16).toUpperCase().padStart(20, '0')}`,
        CommitTime: '2026-01-01T00:00:00.000Z',
      },
    };
  }
}

/** CPU time (user + system, ms) of this process while `count` envelopes are delivered; the best of `rounds`. */
async function cpuPerDelivery(cs: string, count: number, rounds: number): Promise<number[]> {
  const samples: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const before = process.cpuUsage();
    await pipeline(Readable.from(cdcEnvelopes(count)), toServiceBus({ connectionString: cs }));
    const used = process.cpuUsage(before);
    samples.push((used.user + used.system) / 1000);
  }
  return samples;
}

export async function run(rounds: number): Promise<BenchResult> {
  const measurements: Measurement[] = [];
  const targets: Target[] = [];
  const notes: string[] = [];
  {
    const group = 'CPU per 100k CDC messages, 3 queues';
    const broker = await startBroker(3);
    await cpuPerDelivery(broker.cs, 20_000, 1); // warm-up: the SDK loaded, the code optimised
    const samples = await cpuPerDelivery(broker.cs, 100_000, Math.max(2, rounds));
    broker.child.kill('SIGTERM');
    measurements.push({ group, name: 'CPU ms per 100k messages (best)', ms: 0, rounds: [], lines: 0, bytes: 0, value: Math.min(...samples) });
    notes.push(`${group}: CPU ms per round ${samples.map((x) => x.toFixed(0)).join(', ')} (load average ${loadavg()[0]!.toFixed(1)}).`);
  }
  for (const bytes of [400, 4096]) {
    for (const queues of [1, 3, 20]) {
      const group = `deliver ${bytes} B to ${queues} queue${queues > 1 ? 's' : ''}`;
      const broker = await startBroker(queues);
      const count = bytes === 400 ? 40_000 : 10_000;
      const naiveCount = 400;
      let fill = { sum: 0, batches: 0 };
      const contenders: Contender[] = [
        {
          name: 'dstream toServiceBus',
          run: async () => {
            const sinks: ServiceBusSink[] = [];
            await pipeline(Readable.from(envelopes(count, queues, bytes)), toServiceBus({ connectionString: broker.cs, onSink: (_q, s) => sinks.push(s as ServiceBusSink) }));
            fill = sinks.reduce((f, s) => ({ sum: f.sum + s.stats.fill, batches: f.batches + s.stats.batches }), { sum: 0, batches: 0 });
          },
        },
        {
          name: 'naive sendMessages per message',
          run: async () => {
            const client = new ServiceBusClient(broker.cs);
            const senders = Array.from({ length: queues }, (_, i) => client.createSender(`T${i}_cdc_events`));
            for (const e of envelopes(naiveCount, queues, bytes)) {
              const q = Number(((e.metadata as { TableName: string }).TableName).slice(1));
              await senders[q]!.sendMessages({ body: e, contentType: 'application/json' });
            }
            await client.close();
          },
        },
      ];
      const medians = await race(contenders, rounds);
      broker.child.kill('SIGTERM');
      for (const c of contenders) {
        const n = c.name.startsWith('dstream') ? count : naiveCount;
        measurements.push({ group, name: c.name, ms: medians.get(c.name)!.ms, rounds: medians.get(c.name)!.rounds, lines: n, bytes: n * bytes });
      }
      targets.push({ group, subject: 'dstream toServiceBus', baseline: 'naive sendMessages per message', minRatio: 10, text: `${group}: dstream >= 10x naive` });
      notes.push(`${group}: mean batch fill ${Math.round((fill.sum / Math.max(1, fill.batches)) * 100)}% over ${fill.batches} batches (last round).`);
      if (queues === 1) {
        measurements.push({ group, name: 'mean batch fill (%)', ms: 0, rounds: [], lines: 0, bytes: 0, value: (fill.sum / Math.max(1, fill.batches)) * 100 });
        targets.push({ group, subject: 'mean batch fill (%)', min: 90, text: `${group}: mean batch fill >= 90% with abundant input` });
      }
    }
  }
  // Memory while the broker takes one batch a second and a million envelopes wait to be read.
  const slow = await startBroker(1, 1000);
  const samples: number[] = [];
  const source = Readable.from(envelopes(1_000_000, 1, 400));
  const out = toServiceBus({ connectionString: slow.cs });
  const flowing = pipeline(source, out).catch(() => undefined);
  for (let s = 0; s < 10; s++) {
    await new Promise((r) => setTimeout(r, 1000));
    (globalThis as { gc?: () => void }).gc?.();
    samples.push(process.memoryUsage().rss / 2 ** 20);
  }
  source.destroy();
  out.destroy();
  await flowing;
  slow.child.kill('SIGTERM');
  const growth = samples[samples.length - 1]! - samples[1]!;
  measurements.push({ group: 'slow broker (1 batch/s), 1M envelopes waiting', name: 'RSS growth after the first second (MB)', ms: 0, rounds: [], lines: 0, bytes: 0, value: growth });
  targets.push({ group: 'slow broker (1 batch/s), 1M envelopes waiting', subject: 'RSS growth after the first second (MB)', max: 20, text: 'RSS flat behind a slow broker (growth over 9 s < 20 MB)' });
  notes.push(`slow broker: RSS each second (MB): ${samples.map((x) => x.toFixed(0)).join(', ')}.`);
  return { measurements, targets, notes };
}
