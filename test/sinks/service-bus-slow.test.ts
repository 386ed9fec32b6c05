/**
 * A namespace slower than send_timeout_ms, through the real SDK against the AMQP test broker's
 * delay and freeze controls: the sink says so once, waits longer, and still delivers every row.
 */
import { once } from 'node:events';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import type { Envelope } from '../../lib/index.js';
import { serviceBusSink } from '../../lib/sinks/service-bus/sink.js';
import { useBroker } from '../support/use-broker.js';
import { cdcChange } from '../support/envelopes.js';

const change = (n: number): Envelope => cdcChange('Orders', { Id: n });
const SLOW = /^queue "Orders_cdc_events": Service Bus did not answer a send within send_timeout_ms \(300 ms\); waiting up to \d+ ms now \(raise send_timeout_ms if the namespace is this slow\)$/;

const broker = useBroker((b) => b.createQueue('Orders_cdc_events', { requiresDuplicateDetection: true }));

/** A sink with send_timeout_ms 300 and quick retries; its warnings go to `warnings`. */
const slowSink = (warnings: string[], options: { maxBatchMessages: number; onRetry?: () => void }) =>
  serviceBusSink({
    connectionString: broker().connectionString,
    queue: 'Orders_cdc_events',
    lingerMs: 1,
    sendTimeoutMs: 300,
    retry: { maxRetries: 20, baseDelayMs: 5, maxDelayMs: 20 },
    onWarning: (w) => warnings.push(w),
    ...options,
  });

describe('serviceBusSink with a namespace slower than send_timeout_ms', () => {
  it('every send answered later than send_timeout_ms: one warning, every row delivered', async () => {
    broker().faults.delayMs = { orders_cdc_events: 700 };
    const warnings: string[] = [];
    const input = Array.from({ length: 200 }, (_, i) => change(i));
    const sink = slowSink(warnings, { maxBatchMessages: 25 });
    await pipeline(Readable.from(input), sink);
    expect(warnings).toEqual([expect.stringMatching(SLOW)]);
    expect(broker().bodies('Orders_cdc_events')).toEqual(input);
    // Only the first batch, which found out how slow the namespace is, was sent again (twice at
    // most); later ones wait long enough at once instead of each being given up and re-sent.
    expect(broker().queue('Orders_cdc_events')!.duplicatesDropped).toBeLessThanOrEqual(2 * 25);
  }, 60_000);

  it('a broker frozen mid-stream past send_timeout_ms: one warning, every row delivered once it answers again', async () => {
    const warnings: string[] = [];
    let retries = 0;
    let givenUpThrice!: () => void;
    const frozenLong = new Promise<void>((r) => (givenUpThrice = r));
    const sink = slowSink(warnings, {
      maxBatchMessages: 10,
      // Given up at 300 ms, then (past send_timeout_ms, warned) at 600 and at 1200 ms.
      onRetry: () => void (++retries === 3 && givenUpThrice()),
    });
    const source = new PassThrough({ objectMode: true });
    const running = pipeline(source, sink);
    const input = Array.from({ length: 60 }, (_, i) => change(i));
    source.write(input[0]);
    await once(sink, 'ack');
    broker().freeze();
    for (const e of input.slice(1, 30)) source.write(e);
    await frozenLong;
    broker().thaw();
    for (const e of input.slice(30)) source.write(e);
    source.end();
    await running;
    expect(warnings).toEqual([expect.stringMatching(SLOW)]);
    expect(broker().bodies('Orders_cdc_events')).toEqual(input);
  }, 60_000);
});
