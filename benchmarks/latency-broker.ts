/**
 * The destination side of the latency benchmark, in its own process: the AMQP test broker, which
 * stamps each message with the time it accepted it (x-opt-enqueued-time). Every 20 ms the
 * messages are taken out and each one's latency (accepted - the CommitTime in its envelope body)
 * kept, in the order they were taken out. Stdin lines:
 *   {"from":ms}  answers {"count":N,"p50":..,"p99":..,"max":..} (ms) over the rows committed at or after `from`;
 *   {"last":n}   the same over the last n rows taken out (the rows a metric counted since a scrape);
 *   {}           {"received":N}, the count so far.
 *   tsx benchmarks/latency-broker.ts
 */
import { createInterface } from 'node:readline';
import { TestBroker } from '../test/support/asb-broker.js';

const QUEUES = ['Persons_cdc_events', 'Orders_cdc_events', 'Customers_cdc_events'];
const broker = await TestBroker.start();
for (const q of QUEUES) broker.createQueue(q);
process.stdout.write(`${JSON.stringify({ port: broker.port })}\n`);

const KEY = Buffer.from('"CommitTime":"');

/**
 * The CommitTime of an envelope body, found in its bytes rather than by parsing the whole JSON:
 * the broker stamps a message when its event loop takes the transfer in, so time spent here on
 * messages already in is added to the latency of those arriving meanwhile. The value is an ISO
 * string without escapes (mssql-cdc writes it), so it ends at the next quote.
 */
function commitTimeOf(body: unknown): number {
  const b = body && typeof body === 'object' && 'content' in body ? (body as { content: unknown }).content : body;
  if (!Buffer.isBuffer(b)) return NaN;
  const at = b.indexOf(KEY);
  if (at < 0) return NaN;
  const start = at + KEY.length;
  return Date.parse(b.toString('latin1', start, b.indexOf(0x22, start)));
}

const commits: number[] = [];
const latencies: number[] = [];
const collect = () => {
  for (const q of broker.queues.values()) {
    for (const m of q.messages.splice(0)) {
      const commit = commitTimeOf(m.message.body);
      commits.push(commit);
      latencies.push(m.enqueuedAt.getTime() - commit);
    }
    q.seenIds.clear();
  }
};
setInterval(collect, 20).unref();

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? NaN;
const figures = (window: number[]) => {
  window.sort((a, b) => a - b);
  return { count: window.length, p50: quantile(window, 0.5), p99: quantile(window, 0.99), max: window.at(-1) ?? NaN };
};
for await (const line of createInterface({ input: process.stdin })) {
  collect();
  const ask = JSON.parse(line) as { from?: number; last?: number };
  if (ask.from !== undefined) process.stdout.write(`${JSON.stringify(figures(latencies.filter((_, i) => commits[i]! >= ask.from!)))}\n`);
  else if (ask.last !== undefined) process.stdout.write(`${JSON.stringify(figures(latencies.slice(Math.max(0, latencies.length - ask.last))))}\n`);
  else process.stdout.write(`${JSON.stringify({ received: latencies.length })}\n`);
}
await broker.close();
