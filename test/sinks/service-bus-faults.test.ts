/**
 * The Service Bus sink under broker faults, through the real SDK against the AMQP test broker: a
 * broker down at start, restarted mid-stream, a connection dropped under a send, throttling with
 * the server's wait, a request the service refuses for good, a sink destroyed while it waits.
 */
import { once } from 'node:events';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCodes, type Envelope } from '../../lib/index.js';
import { serviceBusSink } from '../../lib/sinks/service-bus/sink.js';
import { useBroker } from '../support/use-broker.js';
import { cdcChange } from '../support/envelopes.js';
import { fixture, spawnNode } from '../support/process.js';

const change = (table: string, n: number, extra: Record<string, unknown> = {}): Envelope => cdcChange(table, { Id: n, ...extra });

/** The error a run failed with; fails the test when it succeeded. */
async function failure(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await p;
  } catch (err) {
    return err as { code?: string; message: string };
  }
  throw new Error('expected the run to fail');
}

type RetryEvent = { attempt: number; delayMs: number; error: unknown };

const broker = useBroker((b) => b.createQueue('Orders_cdc_events', { requiresDuplicateDetection: true }));

describe('serviceBusSink under broker faults', () => {
  it('a broker that is down at start (ECONNREFUSED, which the SDK calls GeneralError, retryable: false) is retried until it is up', async () => {
    await broker().stop();
    const retries: RetryEvent[] = [];
    const input = Array.from({ length: 200 }, (_, i) => change('Orders', i));
    const sink = serviceBusSink({
      connectionString: broker().connectionString,
      queue: 'Orders_cdc_events',
      retry: { maxRetries: 20, baseDelayMs: 20, maxDelayMs: 100 },
      onRetry: (r) => {
        retries.push(r);
        if (retries.length === 2) void broker().restart();
      },
    });
    await pipeline(Readable.from(input), sink);
    expect((retries[0]!.error as Error).message).toMatch(/ECONNREFUSED/);
    expect(broker().bodies('Orders_cdc_events')).toEqual(input);
  });

  it('a broker restarted mid-stream: everything delivered, in order, no duplicates kept', async () => {
    const source = new PassThrough({ objectMode: true });
    let retried!: () => void;
    const firstRetry = new Promise<void>((r) => (retried = r));
    const sink = serviceBusSink({
      connectionString: broker().connectionString,
      queue: 'Orders_cdc_events',
      maxBatchMessages: 50,
      lingerMs: 1,
      retry: { maxRetries: 20, baseDelayMs: 20, maxDelayMs: 200 },
      onRetry: () => retried(),
    });
    const input = Array.from({ length: 1000 }, (_, i) => change('Orders', i));
    const running = pipeline(source, sink);
    let acked = 0;
    sink.on('ack', (n: number) => (acked += n));
    for (const e of input.slice(0, 500)) source.write(e);
    while (acked < 200) await once(sink, 'ack');
    await broker().stop();
    for (const e of input.slice(500)) source.write(e);
    source.end();
    await firstRetry;
    await broker().restart();
    await running;
    expect(broker().bodies('Orders_cdc_events')).toEqual(input);
  });

  it('a connection dropped under a send is noticed and the send retried well under the send timeout', async () => {
    const retries: RetryEvent[] = [];
    const sink = serviceBusSink({
      connectionString: broker().connectionString,
      queue: 'Orders_cdc_events',
      sendTimeoutMs: 30_000,
      retry: { maxRetries: 8, baseDelayMs: 10, maxDelayMs: 50 },
      onRetry: (r) => retries.push(r),
    });
    const input = Array.from({ length: 30 }, (_, i) => change('Orders', i));
    const source = new PassThrough({ objectMode: true });
    const running = pipeline(source, sink);
    // Mid-stream: the link is open and has answered before.
    const warm = change('Orders', -1);
    source.write(warm);
    await once(sink, 'ack');
    // Three times: a send reaches the broker, which never answers and loses the connection.
    for (let drop = 0; drop < 3; drop++) {
      broker().freeze();
      for (const e of input.slice(drop * 10, drop * 10 + 10)) source.write(e);
      await once(broker().events, 'held');
      broker().dropConnections();
      broker().thaw();
      await once(sink, 'ack');
    }
    source.end();
    await running;
    expect(broker().bodies('Orders_cdc_events')).toEqual([warm, ...input]);
    expect(retries).toHaveLength(3);
    for (const r of retries) expect((r.error as Error).message).toMatch(/no answer from Service Bus within (\d+) ms/);
    // Each was given up after a wait far below the 30 s send timeout (a few times the slowest answer, at least 2 s).
    for (const r of retries) expect(Number(/within (\d+) ms/.exec((r.error as Error).message)![1])).toBeLessThanOrEqual(10_000);
  });

  it('throttling (ServerBusy, 50009) waits what the server asks, not a short backoff', async () => {
    broker().throttle(1, 2);
    const retries: RetryEvent[] = [];
    const input = Array.from({ length: 20 }, (_, i) => change('Orders', i));
    const sink = serviceBusSink({ connectionString: broker().connectionString, queue: 'Orders_cdc_events', retry: { maxRetries: 3, baseDelayMs: 1, maxDelayMs: 5 }, onRetry: (r) => retries.push(r) });
    await pipeline(Readable.from(input), sink);
    expect(retries).toHaveLength(1);
    expect((retries[0]!.error as { code?: string }).code).toBe('ServiceBusy');
    expect(retries[0]!.delayMs).toBeGreaterThanOrEqual(2000);
    expect(broker().bodies('Orders_cdc_events')).toEqual(input);
  });

  it.each([
    ['amqp:not-allowed', 'The operation is not allowed on this entity.'],
    ['com.microsoft:argument-out-of-range', 'The value is out of range.'],
    ['amqp:decode-error', 'The message could not be decoded.'],
  ])('a request Service Bus refuses for good (%s, GeneralError retryable: false) fails at once, not after 8 retries', async (condition, description) => {
    broker().refuseNextTransfer(condition, description);
    const retries: RetryEvent[] = [];
    const sink = serviceBusSink({ connectionString: broker().connectionString, queue: 'Orders_cdc_events', retry: { maxRetries: 8, baseDelayMs: 1, maxDelayMs: 5 }, onRetry: (r) => retries.push(r) });
    const err = await failure(pipeline(Readable.from([change('Orders', 1)]), sink));
    expect(err.code).toBe(ErrorCodes.SERVICE_BUS);
    expect(err.message).toContain(description);
    expect(err.message).not.toMatch(/attempts/);
    expect(retries).toHaveLength(0);
  });

  it('says the real number of attempts when it gives up', async () => {
    await broker().stop();
    const sink = serviceBusSink({ connectionString: broker().connectionString, queue: 'Orders_cdc_events', retry: { maxRetries: 3, baseDelayMs: 1, maxDelayMs: 5 } });
    const err = await failure(pipeline(Readable.from([change('Orders', 1)]), sink));
    expect(err.code).toBe(ErrorCodes.SERVICE_BUS);
    expect(err.message).toMatch(/after 4 attempts: .*ECONNREFUSED/);
  });

  it('a sink destroyed while it waits to retry lets the process exit at once (the wait is aborted)', async () => {
    await broker().stop();
    // The retry delay is ten minutes; the test's 30 s guard fails it if the process sleeps it out.
    const run = await spawnNode(fixture('destroyed-sink.mjs'), [String(broker().port)], { timeoutMs: 25_000 });
    const lines = run.lines() as Array<Record<string, unknown>>;
    expect(lines[0]).toMatchObject({ retrying: true });
    expect(lines.at(-1)).toEqual({ closed: true });
    expect(run.code).toBe(0);
  });
});

describe('session queues', () => {
  it('a record without its session key is refused as an invalid record, saying where it came from', async () => {
    const bad = change('Orders', 2);
    delete (bad.data as Record<string, unknown>).Id;
    const sink = serviceBusSink({ connectionString: broker().connectionString, queue: 'Orders_cdc_events', sessionKey: 'Id' });
    const err = await failure(pipeline(Readable.from([change('Orders', 1), bad]), sink));
    expect(err.code).toBe(ErrorCodes.INVALID_RECORD);
    expect(err.message).toContain(`table dbo.Orders, LSN ${bad.metadata!.LSN}`);
    expect(err.message).toContain('session_key column "Id"');
  });

  it('a session key over 128 characters is a clear error, not the SDK\'s plain Error', async () => {
    const long = change('Orders', 1, { Key: 'k'.repeat(129) });
    const sink = serviceBusSink({ connectionString: broker().connectionString, queue: 'Orders_cdc_events', sessionKey: 'Key' });
    const err = await failure(pipeline(Readable.from([long]), sink));
    expect(err.code).toBe(ErrorCodes.INVALID_RECORD);
    expect(err.message).toMatch(/holds 129 characters; Service Bus accepts a SessionId of at most 128/);
  });
});
