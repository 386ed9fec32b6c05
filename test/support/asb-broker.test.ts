/**
 * The test broker and its management endpoint refuse what Service Bus refuses, seen through the
 * real SDK clients. These pin the fakes, so that product tests against them mean something.
 */
import { ServiceBusAdministrationClient, ServiceBusClient, type ServiceBusMessage } from '@azure/service-bus';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_BATCH_BYTES, PREMIUM_LARGE_MAX_MESSAGE_SIZE, TestBroker } from './asb-broker.js';

let broker: TestBroker;
let client: ServiceBusClient | undefined;
afterEach(async () => {
  await client?.close();
  client = undefined;
  await broker.close();
  expect(broker.errors).toEqual([]);
});

const sbClient = () => (client = new ServiceBusClient(broker.connectionString, { retryOptions: { maxRetries: 0 } }));
const messages = (n: number, size = 10, extra: Partial<ServiceBusMessage> = {}) => Array.from({ length: n }, (_, i) => ({ body: 'x'.repeat(size), messageId: `m${i}`, ...extra }));

describe('the AMQP test broker refuses what Service Bus refuses', () => {
  it('detaches the link for a batch over 1 MB, also when the link announces 100 MB (Premium large messages)', async () => {
    broker = await TestBroker.start({ maxMessageSize: PREMIUM_LARGE_MAX_MESSAGE_SIZE });
    broker.createQueue('q');
    const sender = sbClient().createSender('q');
    const batch = await sender.createMessageBatch();
    for (const m of messages(15, 100 * 1024)) expect(batch.tryAddMessage(m)).toBe(true);
    const err = await sender.sendMessages(batch).catch((e) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(/is force detached by the broker because publisher\(link1\) received a batch message with no data in it/);
    expect(broker.refused).toEqual([expect.objectContaining({ detach: true })]);
    expect(broker.queue('q')!.messages).toHaveLength(0);
    // One message of 1.5 MB on its own is accepted on such a link.
    const alone = sbClient().createSender('q');
    await alone.sendMessages({ body: 'y'.repeat(1.5 * MAX_BATCH_BYTES), messageId: 'big' });
    expect(broker.queue('q')!.messages).toHaveLength(1);
  });

  it('rejects a batch of distinct MessageIds on a partitioned queue with duplicate detection', async () => {
    broker = await TestBroker.start();
    broker.createQueue('q', { enablePartitioning: true, requiresDuplicateDetection: true });
    const sender = sbClient().createSender('q');
    const err = await sender.sendMessages(messages(3)).catch((e) => e);
    expect(err.message).toMatch(/^InvalidOperationError: Batching brokered messages with distinct SessionId, PartitionKey, or MessageId is not supported/);
    await sender.sendMessages(messages(1)[0]!); // one at a time is fine
    expect(broker.queue('q')!.messages).toHaveLength(1);
  });

  it('rejects a message without SessionId on a session queue', async () => {
    broker = await TestBroker.start();
    broker.createQueue('q', { requiresSession: true });
    const sender = sbClient().createSender('q');
    const err = await sender.sendMessages(messages(2)).catch((e) => e);
    expect(err.message).toMatch(/^InvalidOperationError: The SessionId was not set on a message/);
    await sender.sendMessages(messages(2, 10, { sessionId: 'k' }));
    expect(broker.queue('q')!.messages).toHaveLength(2);
  });

  it('forgets MessageIds after the duplicate detection window', async () => {
    broker = await TestBroker.start();
    broker.createQueue('q', { requiresDuplicateDetection: true, duplicateWindowMs: 10 * 60_000 });
    const sender = sbClient().createSender('q');
    await sender.sendMessages(messages(2));
    await sender.sendMessages(messages(2));
    expect(broker.queue('q')!.duplicatesDropped).toBe(2);
    broker.clockOffsetMs = 10 * 60_000 + 1;
    await sender.sendMessages(messages(2));
    expect(broker.queue('q')!.messages).toHaveLength(4);
  });

  it('throttles past its credits with the service\'s 50009 answer and its 2 s hint, when asked to', async () => {
    broker = await TestBroker.start();
    broker.createQueue('q');
    broker.throttling = { creditsPerSecond: 5 };
    const sender = sbClient().createSender('q');
    const now = Date.now();
    broker.clockOffsetMs = 1000 - (now % 1000) + 1; // start of a fresh second on the broker's clock
    await sender.sendMessages(messages(5));
    const err = await sender.sendMessages(messages(1)).catch((e) => e);
    expect(err.code).toBe('ServiceBusy');
    expect(err.message).toMatch(/Error code : 50009\. Please wait 2 seconds and try again/);
  });
});

describe('the ATOM management endpoint answers as the service does', () => {
  const admin = () => {
    const a = new ServiceBusAdministrationClient(broker.connectionString, { retryOptions: { maxRetries: 0 } });
    a.pipeline.addPolicy({ name: 'http', sendRequest: (req, next) => next(Object.assign(req, { url: req.url.replace(/^https:/, 'http:'), allowInsecureConnection: true })) });
    return a;
  };

  it('normalises durations, reports 16 times the size of a partitioned Standard queue, refuses out-of-range values', async () => {
    broker = await TestBroker.start();
    const q = await admin().createQueue('p', { lockDuration: 'PT60S', duplicateDetectionHistoryTimeWindow: 'PT600S', requiresDuplicateDetection: true, enablePartitioning: true, maxSizeInMegabytes: 1024 });
    expect(q).toMatchObject({ lockDuration: 'PT1M', duplicateDetectionHistoryTimeWindow: 'PT10M', maxSizeInMegabytes: 16384 });
    expect(broker.queue('p')!.duplicateWindowMs).toBe(600_000);
    for (const bad of [{ maxSizeInMegabytes: 1000 }, { lockDuration: 'PT6M' }, { duplicateDetectionHistoryTimeWindow: 'PT10S' }, { duplicateDetectionHistoryTimeWindow: 'P8D' }]) {
      const err = await admin().createQueue('bad', bad).catch((e) => e);
      expect(err.statusCode, JSON.stringify(bad)).toBe(400);
    }
    expect(broker.queue('bad')).toBeUndefined();
  });
});
