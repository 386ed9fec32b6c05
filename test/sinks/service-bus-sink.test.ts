import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ServiceBusClient } from '@azure/service-bus';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { checkpoint, ErrorCodes, partitionByTable, type CheckpointEnvelope, type Envelope } from '../../lib/index.js';
import { openClients } from '../../lib/sinks/service-bus/client.js';
import { serviceBusSink } from '../../lib/sinks/service-bus/sink.js';
import { messageIdOf } from '../../lib/sinks/service-bus/message.js';
import { MAX_BATCH_BYTES, PREMIUM_LARGE_MAX_MESSAGE_SIZE, TestBroker } from '../support/asb-broker.js';
import { cdcChange } from '../support/envelopes.js';
import { text, until } from '../support/streams.js';

const TABLES = ['Persons', 'Orders', 'Customers'];
const change = (table: string, n: number, extra: Record<string, unknown> = {}): Envelope => cdcChange(table, { Id: n, Name: `row ${n}`, ...extra }, { Destination: `${table}_cdc_events` });

/** Reads every message of a queue back with the real SDK receiver (peek-lock + complete). */
async function readBack(cs: string, queue: string): Promise<Array<{ body: Envelope; messageId: unknown; subject?: string; props: unknown }>> {
  const client = new ServiceBusClient(cs);
  // Received and deleted in one step: the read-back settles nothing, so a slow machine cannot make the
  // SDK fall back to settling over the management link.
  const receiver = client.createReceiver(queue, { receiveMode: 'receiveAndDelete' });
  const out: Array<{ body: Envelope; messageId: unknown; subject?: string; props: unknown }> = [];
  for (;;) {
    // Generous: the broker shares this process, and a receive that ends before its first message
    // is decoded drains, which the SDK gives 200 ms before it closes the receiver.
    const got = await receiver.receiveMessages(500, { maxWaitTimeInMs: 2000 });
    if (got.length === 0) break;
    for (const m of got) {
      out.push({ body: m.body as Envelope, messageId: m.messageId, subject: m.subject, props: m.applicationProperties });
    }
  }
  await client.close();
  return out;
}

let broker: TestBroker;
beforeEach(async () => {
  broker = await TestBroker.start();
  for (const t of TABLES) broker.createQueue(`${t}_cdc_events`, { requiresDuplicateDetection: true });
});
afterEach(async () => {
  await broker.close();
  expect(broker.errors).toEqual([]);
});

const fastRetry = { maxRetries: 5, baseDelayMs: 10, maxDelayMs: 50 };

describe('serviceBusSink with partitionByTable, against the AMQP test broker', () => {
  it('delivers every envelope exactly once, to the queue of its table, in order, mapped as documented', async () => {
    const input: Envelope[] = [];
    for (let i = 0; i < 1500; i++) input.push(change(TABLES[i % 3]!, i));
    const sinks: Array<ReturnType<typeof serviceBusSink>> = [];
    await pipeline(
      Readable.from(input),
      partitionByTable({
        sinkFor: (queue) => {
          const s = serviceBusSink({ connectionString: broker.connectionString, queue, retry: fastRetry });
          sinks.push(s);
          return s;
        },
      }),
    );
    for (const t of TABLES) {
      const queue = `${t}_cdc_events`;
      const got = await readBack(broker.connectionString, queue);
      const expected = input.filter((e) => e.metadata?.TableName === t);
      expect(got.map((m) => m.body)).toEqual(expected);
      expect(got.map((m) => m.messageId)).toEqual(expected.map((e) => messageIdOf(queue, e)));
      expect(got[0]!.subject).toBe('Insert');
      expect(got[0]!.props).toEqual({ table: t, schema: 'dbo', operation: 'Insert', lsn: expected[0]!.metadata!.LSN, seq: '0x01' });
    }
    // Batched: far fewer transfers than messages.
    expect(broker.transfers.length).toBeLessThan(60);
    expect(sinks.reduce((n, s) => n + s.stats.messages, 0)).toBe(1500);
    expect(openClients()).toBe(0); // the shared client closed with the last sink
  });

  it('sends only the data when body is "data", and sets sessionId from a key column', async () => {
    const e = change('Persons', 7);
    await pipeline(Readable.from([e]), serviceBusSink({ connectionString: broker.connectionString, queue: 'Persons_cdc_events', body: 'data', sessionKey: 'Id' }));
    const stored = broker.queue('Persons_cdc_events')!.messages[0]!.message;
    expect(broker.bodies('Persons_cdc_events')).toEqual([e.data]);
    expect(stored.group_id).toBe('7');
  });

  it('fills batches to the maximum size when input is abundant', async () => {
    const input = Array.from({ length: 3000 }, (_, i) => change('Orders', i, { Note: 'x'.repeat(300) }));
    const sink = serviceBusSink({ connectionString: broker.connectionString, queue: 'Orders_cdc_events' });
    await pipeline(Readable.from(input), sink);
    const s = sink.stats;
    expect(s.messages).toBe(3000);
    // Every batch but the last is full (the last one takes what remains).
    expect(s.fill / s.batches).toBeGreaterThan(0.9);
  });

  it('fails with DSTREAM_ERR_MESSAGE_TOO_LARGE naming table, LSN and size, and acks nothing after it', async () => {
    const big = change('Persons', 2, { Blob: 'y'.repeat(300 * 1024) });
    const acks: number[] = [];
    const sink = serviceBusSink({ connectionString: broker.connectionString, queue: 'Persons_cdc_events' });
    sink.on('ack', (n) => acks.push(n));
    const err = await pipeline(Readable.from([change('Persons', 1), big, change('Persons', 3)]), sink).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.MESSAGE_TOO_LARGE);
    expect(err.message).toContain('table dbo.Persons');
    expect(err.message).toContain(`LSN ${big.metadata!.LSN}`);
    expect(err.message).toMatch(/about \d{6} bytes is larger than queue "Persons_cdc_events" accepts \(262144 bytes\)/);
    expect(acks.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(1);
  });

  it('dead-letters an oversize record in its place in the order when asked to', async () => {
    const dead = text();
    const big = change('Persons', 2, { Blob: 'y'.repeat(300 * 1024) });
    const acks: number[] = [];
    const sink = serviceBusSink({ connectionString: broker.connectionString, queue: 'Persons_cdc_events', onOversize: 'dead-letter', deadLetter: dead });
    sink.on('ack', (n) => acks.push(n));
    await pipeline(Readable.from([change('Persons', 1), big, change('Persons', 3)]), sink);
    expect(broker.bodies('Persons_cdc_events').map((b) => (b as Envelope).data)).toEqual([
      { Id: 1, Name: 'row 1' },
      { Id: 3, Name: 'row 3' },
    ]);
    const letter = JSON.parse(dead.text());
    expect(letter).toMatchObject({ reason: 'message too large', queue: 'Persons_cdc_events', maxSize: 262144 });
    expect(letter.record.metadata.LSN).toBe(big.metadata!.LSN);
    expect(acks.reduce((a, b) => a + b, 0)).toBe(3);
    expect(sink.stats.deadLettered).toBe(1);
  });

  it('caps batches at 1 MB on a Premium large-message queue, and sends a record over 1 MB on its own', async () => {
    await broker.close();
    broker = await TestBroker.start({ maxMessageSize: PREMIUM_LARGE_MAX_MESSAGE_SIZE });
    broker.createQueue('Orders_cdc_events', { requiresDuplicateDetection: true });
    const input = Array.from({ length: 40 }, (_, i) => change('Orders', i, { Note: 'n'.repeat(100 * 1024) }));
    input.splice(20, 0, change('Orders', 999, { Blob: 'b'.repeat(1.5 * MAX_BATCH_BYTES) }));
    const sink = serviceBusSink({ connectionString: broker.connectionString, queue: 'Orders_cdc_events', retry: fastRetry });
    await pipeline(Readable.from(input), sink);
    expect(broker.refused).toEqual([]);
    expect(broker.bodies('Orders_cdc_events')).toEqual(input);
    const big = broker.transfers.find((t) => t.bytes > MAX_BATCH_BYTES)!;
    expect(big.messages).toBe(1);
    expect(broker.transfers.filter((t) => t !== big).every((t) => t.bytes <= MAX_BATCH_BYTES)).toBe(true);
    expect(broker.transfers.length).toBeLessThan(input.length); // still batched below the cap
  });

  it('sends to a partitioned queue with duplicate detection one message per send, in order, in the table\'s partition', async () => {
    broker.createQueue('Accounts_cdc_events', { enablePartitioning: true, requiresDuplicateDetection: true });
    const input = Array.from({ length: 60 }, (_, i) => change('Accounts', i));
    const sink = serviceBusSink({ connectionString: broker.connectionString, queue: 'Accounts_cdc_events', retry: fastRetry });
    await pipeline(Readable.from(input), sink);
    expect(broker.bodies('Accounts_cdc_events')).toEqual(input);
    expect(broker.refused.length).toBeLessThanOrEqual(1); // the first batch tells the sink
    expect(sink.stats.retries).toBe(0);
    const stored = broker.queue('Accounts_cdc_events')!.messages.map((m) => m.message.message_annotations?.['x-opt-partition-key']);
    expect(new Set(stored)).toEqual(new Set(['dbo.Accounts']));
  });

  it('gives a record without an LSN a MessageId derived from the record, so a replay is dropped as a duplicate', async () => {
    const plain = (n: number): Envelope => ({ source: 'files', type: 'row', data: { Id: n }, metadata: { TableName: 'Persons' } });
    const input = [plain(1), plain(2), plain(3)];
    await pipeline(Readable.from(input), serviceBusSink({ connectionString: broker.connectionString, queue: 'Persons_cdc_events' }));
    await pipeline(Readable.from(input.map((e) => structuredClone(e))), serviceBusSink({ connectionString: broker.connectionString, queue: 'Persons_cdc_events' }));
    expect(broker.bodies('Persons_cdc_events')).toEqual(input);
    expect(broker.queue('Persons_cdc_events')!.duplicatesDropped).toBe(3);
  });

  it('sends the MessageIds earlier dstream versions sent for the same records, so duplicate detection holds across an upgrade', async () => {
    const base = { source: 'mssql-cdc', type: 'cdc', data: { Id: 1, Name: 'Zoë' } };
    const input: Envelope[] = [
      { ...base, metadata: { TableName: 'Persons', Schema: 'dbo', OperationType: 'Insert', OperationID: 2, LSN: '0x00000027000001A00003', Seq: '0x0000002700000190001B' } },
      // The same change as the Go ingester and hand-written producers spell LSN and Seq: the same id.
      { ...base, metadata: { TableName: 'Persons', OperationType: 'Insert', OperationID: 2, LSN: '00000027000001a00003', Seq: '0000002700000190001b' } },
      { ...base, metadata: { TableName: 'Persons', OperationID: 2, LSN: '0x00000027000001a00003', Seq: '0X0000002700000190001b' } },
      { ...base, metadata: { TableName: 'Persons', OperationType: 'Update', LSN: '0x00000027000001A00003', Seq: '0x0000002700000190001B' } },
      { ...base, metadata: { TableName: 'Persons', OperationID: 1, LSN: '0x00000027000001A00003' } },
      { ...base, metadata: { TableName: 'Persons', OperationID: 4, LSN: 'lsn-17', Seq: '0x1' } },
      { source: 'generator', type: 'row', data: { b: [1, 'two', { z: null, a: 'ü' }], a: 1.5, skip: undefined }, metadata: { TableName: 'Persons', Destination: 'Persons_cdc_events', CommitTime: '2026-01-01T00:00:00Z' } },
    ];
    await pipeline(Readable.from(input), serviceBusSink({ connectionString: broker.connectionString, queue: 'Persons_cdc_events' }));
    const q = broker.queue('Persons_cdc_events')!;
    expect(q.duplicatesDropped).toBe(2);
    // SHA-1 (hex) of "<queue, lower case>|<LSN>|<Seq>|<OperationID or OperationType>", LSN and Seq as 0x + upper-case hex.
    const sha1 = (s: string) => createHash('sha1').update(s).digest('hex');
    expect(q.messages.map((m) => m.message.message_id)).toEqual([
      sha1('persons_cdc_events|0x00000027000001A00003|0x0000002700000190001B|2'),
      sha1('persons_cdc_events|0x00000027000001A00003|0x0000002700000190001B|Update'),
      sha1('persons_cdc_events|0x00000027000001A00003||1'),
      sha1('persons_cdc_events|lsn-17|0x1|4'),
      // Without an LSN: SHA-1 of the record's sorted-key JSON, as dstream 0.1 sent it.
      '329a09c0009e05a5c38dfbe46eef39eb9963ee00',
    ]);
  });

  it('reports a missing queue by name, with what to do', async () => {
    const err = await pipeline(Readable.from([change('Ghosts', 1)]), serviceBusSink({ connectionString: broker.connectionString, queue: 'Ghosts_cdc_events' })).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.QUEUE_NOT_FOUND);
    expect(err.message).toBe('queue "Ghosts_cdc_events" in 127.0.0.1:' + broker.port + ' does not exist; create it with `dstream init <task>`, or set on_missing_queue = "create"');
  });

  it('retries after ServerBusy, waiting what Service Bus asks for throttling (2 s when it names no wait), and loses nothing', async () => {
    broker.faults.serverBusyOnTransfer = 2;
    const retries: Array<{ attempt: number; delayMs: number }> = [];
    const input = Array.from({ length: 400 }, (_, i) => change('Orders', i));
    const sink = serviceBusSink({ connectionString: broker.connectionString, queue: 'Orders_cdc_events', maxBatchMessages: 50, retry: fastRetry, onRetry: (r) => retries.push(r) });
    await pipeline(Readable.from(input), sink);
    expect(retries.length).toBeGreaterThanOrEqual(1);
    expect(retries[0]!.delayMs).toBeGreaterThanOrEqual(2000);
    expect(broker.bodies('Orders_cdc_events')).toEqual(input);
  });

  it('survives a dropped connection mid-stream: retried, nothing lost, nothing duplicated after duplicate detection', async () => {
    broker.faults.dropConnectionAfterMessages = 120;
    const input = Array.from({ length: 600 }, (_, i) => change('Customers', i));
    const sink = serviceBusSink({ connectionString: broker.connectionString, queue: 'Customers_cdc_events', maxBatchMessages: 40, retry: fastRetry, sendTimeoutMs: 1000 });
    await pipeline(Readable.from(input), sink);
    const q = broker.queue('Customers_cdc_events')!;
    expect(broker.bodies('Customers_cdc_events')).toEqual(input);
    // The batch in flight when the connection died was stored but never confirmed: it was sent
    // again and duplicate detection dropped the copies (same deterministic MessageIds).
    expect(q.duplicatesDropped).toBeGreaterThan(0);
    expect(q.received).toBe(600 + q.duplicatesDropped);
    expect(sink.stats.retries).toBeGreaterThanOrEqual(1);
  }, 20_000);

  it('keeps memory bounded behind a slow broker, also when batches are cut by message count', async () => {
    broker.faults.delayMs = { orders_cdc_events: 200 };
    let pulled = 0;
    function* source() {
      for (let i = 0; i < 5000; i++) {
        pulled++;
        yield change('Orders', i);
      }
    }
    const sink = serviceBusSink({ connectionString: broker.connectionString, queue: 'Orders_cdc_events', maxBatchMessages: 5, highWaterMark: 16 });
    const running = pipeline(Readable.from(source(), { highWaterMark: 16 }), sink).catch((e) => e);
    // Stalled behind the broker: batches are being stored, slowly, and the sink asks its writer to wait.
    await until(() => (broker.queue('Orders_cdc_events')?.messages.length ?? 0) >= 10 && sink.writableNeedDrain);
    // A few batches of 5 in the sink plus the stream buffers (16 + 16): nowhere near 5000.
    expect(pulled).toBeLessThan(100);
    sink.destroy();
    await running;
  });

  it('keeps memory bounded behind a frozen broker when records trickle in and each batch goes by its linger, none full', async () => {
    let pulled = 0;
    async function* source() {
      for (let i = 0; i < 100_000; i++) {
        pulled++;
        yield change('Orders', i);
        // A record every 1-2 ms: a few per linger, so no batch ever fills.
        await new Promise((r) => setTimeout(r, 1));
      }
    }
    const sink = serviceBusSink({ connectionString: broker.connectionString, queue: 'Orders_cdc_events', lingerMs: 5, maxBatchMessages: 50, highWaterMark: 16 });
    const running = pipeline(Readable.from(source(), { highWaterMark: 16 }), sink).catch((e) => e);
    await until(() => (broker.queue('Orders_cdc_events')?.messages.length ?? 0) > 0);
    broker.freeze();
    // Lingers keep expiring while the broker holds the batch in flight: the records wait in the
    // open batch, and once it is full the sink asks its writer to wait.
    await until(() => sink.writableNeedDrain && broker.heldTransfers > 0);
    // Then the source's own buffer fills (16), and nothing more is pulled.
    await new Promise((r) => setTimeout(r, 200));
    const stalled = pulled;
    await new Promise((r) => setTimeout(r, 300));
    expect(pulled).toBe(stalled);
    // Stored + the batch in flight + a full batch + the stream buffers (16 + 16).
    expect(pulled).toBeLessThanOrEqual((broker.queue('Orders_cdc_events')?.messages.length ?? 0) + 50 + 50 + 16 + 16 + 2);
    broker.thaw();
    sink.destroy();
    await running;
  });

  it('acknowledges a checkpoint only after every earlier message of every queue was accepted', async () => {
    broker.faults.delayMs = { orders_cdc_events: 300 };
    const released: Array<{ position: unknown; ordersStored: number; personsStored: number }> = [];
    const input: Envelope[] = [change('Orders', 1), change('Persons', 2), checkpoint('after-2'), change('Persons', 3), checkpoint('after-3')];
    await pipeline(
      Readable.from(input),
      partitionByTable({
        sinkFor: (queue) => serviceBusSink({ connectionString: broker.connectionString, queue, lingerMs: 5 }),
        onCheckpoint: (cp: CheckpointEnvelope) =>
          void released.push({
            position: cp.data.position,
            ordersStored: broker.queue('Orders_cdc_events')!.messages.length,
            personsStored: broker.queue('Persons_cdc_events')!.messages.length,
          }),
      }),
    );
    expect(released).toEqual([
      { position: 'after-2', ordersStored: 1, personsStored: expect.any(Number) },
      { position: 'after-3', ordersStored: 1, personsStored: 2 },
    ]);
    expect(released[0]!.personsStored).toBeGreaterThanOrEqual(1);
  });
});
