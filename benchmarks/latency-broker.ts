/**
 * The destination side of the latency benchmark, in its own process: the AMQP test broker, which
 * stamps each message with the time it accepted it (x-opt-enqueued-time). Every 100 ms the
 * messages are taken out and each one's latency (accepted - the CommitTime in its envelope body)
 * kept; stdin line {"from":ms} answers {"count":N,"p50":..,"p99":..,"max":..} (ms) over the rows
 * committed at or after `from`, and {"received":N} is the count so far.
 *   tsx benchmarks/latency-broker.ts
 */
import { createInterface } from 'node:readline';
import { decodeBody, TestBroker } from '../test/support/asb-broker.js';

const QUEUES = ['Persons_cdc_events', 'Orders_cdc_events', 'Customers_cdc_events'];
const broker = await TestBroker.start();
for (const q of QUEUES) broker.createQueue(q);
process.stdout.write(`${JSON.stringify({ port: broker.port })}\n`);

const commits: number[] = [];
const latencies: number[] = [];
const collect = () => {
  for (const q of broker.queues.values()) {
    for (const m of q.messages.splice(0)) {
      const env = decodeBody(m.message.body) as { metadata?: { CommitTime?: string } };
      const commit = Date.parse(env.metadata?.CommitTime ?? '');
      commits.push(commit);
      latencies.push(m.enqueuedAt.getTime() - commit);
    }
    q.seenIds.clear();
  }
};
setInterval(collect, 100).unref();

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? NaN;
for await (const line of createInterface({ input: process.stdin })) {
  collect();
  const ask = JSON.parse(line) as { from?: number };
  if (ask.from === undefined) {
    process.stdout.write(`${JSON.stringify({ received: latencies.length })}\n`);
    continue;
  }
  const window = latencies.filter((_, i) => commits[i]! >= ask.from!).sort((a, b) => a - b);
  process.stdout.write(`${JSON.stringify({ count: window.length, p50: quantile(window, 0.5), p99: quantile(window, 0.99), max: window.at(-1) ?? NaN })}\n`);
}
await broker.close();
