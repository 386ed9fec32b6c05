import { createServer } from 'node:net';
import { ServiceBusClient } from '@azure/service-bus';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../lib/index.js';
import { adminClient, emulatorManagementPort, ensureQueue, ownershipOf } from '../../lib/infra/service-bus-admin.js';
import { TestBroker } from '../support/asb-broker.js';
import { useBroker } from '../support/use-broker.js';

const current = useBroker();

describe('queue management through the real administration client (test ATOM endpoint)', () => {
  it('creates a queue with the task settings and marks it as the task\'s; a second call finds it', async () => {
    const admin = adminClient({ connectionString: current().connectionString });
    expect(await ensureQueue(admin, 'Persons_cdc_events', { maxDeliveryCount: 5, lockDuration: 'PT2M' }, { task: 'mssql-to-asb' })).toBe('created');
    const q = await admin.getQueue('Persons_cdc_events');
    expect(q).toMatchObject({
      name: 'Persons_cdc_events',
      requiresDuplicateDetection: true,
      duplicateDetectionHistoryTimeWindow: 'PT10M',
      maxDeliveryCount: 5,
      lockDuration: 'PT2M',
    });
    expect(ownershipOf(q.userMetadata)).toEqual({ 'managed-by': 'dstream', task: 'mssql-to-asb' });
    // Names are case-insensitive, as in Service Bus.
    expect(await ensureQueue(admin, 'persons_CDC_events', {}, { task: 'mssql-to-asb' })).toBe('exists');
    expect(current().adminRequests.map((r) => `${r.method} ${r.status}`)).toEqual(['PUT 201', 'GET 200', 'PUT 409']);
  });

  it('lists queues and reports runtime counts', async () => {
    const admin = adminClient({ connectionString: current().connectionString });
    await ensureQueue(admin, 'Orders_cdc_events', {});
    const client = new ServiceBusClient(current().connectionString);
    await client.createSender('Orders_cdc_events').sendMessages([{ body: 1 }, { body: 2 }]);
    await client.close();
    const names: string[] = [];
    for await (const q of admin.listQueues()) names.push(q.name);
    expect(names).toEqual(['Orders_cdc_events']);
    const rt = await admin.getQueueRuntimeProperties('Orders_cdc_events');
    expect(rt.activeMessageCount).toBe(2);
    expect(rt.totalMessageCount).toBe(2);
  });

  it('retries when the service answers ServerBusy', async () => {
    current().adminFaults.busyNext = 2;
    const admin = adminClient({ connectionString: current().connectionString });
    expect(await ensureQueue(admin, 'Customers_cdc_events', {}, { retry: { baseDelayMs: 5, maxDelayMs: 20 } })).toBe('created');
    expect(current().adminRequests.map((r) => r.status)).toEqual([503, 503, 201]);
  });

  it('reports a connection failure as such, never as a missing or existing queue', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
    const port = (closed.address() as { port: number }).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const admin = adminClient({ connectionString: `Endpoint=sb://127.0.0.1:${port};SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true` });
    const err = await ensureQueue(admin, 'Q', {}, { endpoint: `127.0.0.1:${port}`, retry: { maxRetries: 1, baseDelayMs: 1 } }).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.SERVICE_BUS);
    expect(err.message).toMatch(new RegExp(`^127\\.0\\.0\\.1:${port}: could not create queue "Q"`));
    expect(err.message).toMatch(/ECONNREFUSED/);
  });
});

describe('the Service Bus emulator: management on its own port', () => {
  it('goes to port 5300 when the connection string names the AMQP port 5672 or none, else to the port given or the same one', () => {
    expect(emulatorManagementPort('Endpoint=sb://localhost;SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true;')).toBe(5300);
    expect(emulatorManagementPort('Endpoint=sb://localhost:5672;SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true;')).toBe(5300);
    expect(emulatorManagementPort('Endpoint=sb://127.0.0.1:40123;SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true')).toBeUndefined();
    expect(emulatorManagementPort('Endpoint=sb://localhost;UseDevelopmentEmulator=true', 15300)).toBe(15300);
  });

  it('manages queues through the management port of an emulator-shaped broker; its AMQP port answers no HTTP', async () => {
    const emulator = await TestBroker.start({ layout: 'emulator' });
    try {
      expect(emulator.managementPort).not.toBe(emulator.port);
      const onAmqpPort = await ensureQueue(adminClient({ connectionString: emulator.connectionString }, { retryOptions: { maxRetries: 0 } }), 'Persons_cdc_events', {}, { task: 't' }).catch((e) => e);
      expect(onAmqpPort.code).toBe(ErrorCodes.SERVICE_BUS);
      const admin = adminClient({ connectionString: emulator.connectionString }, { emulatorManagementPort: emulator.managementPort });
      expect(await ensureQueue(admin, 'Persons_cdc_events', {}, { task: 't' })).toBe('created');
      expect(emulator.queue('Persons_cdc_events')!.requiresDuplicateDetection).toBe(true);
      // The sink then sends on the AMQP port.
      const client = new ServiceBusClient(emulator.connectionString);
      await client.createSender('Persons_cdc_events').sendMessages({ body: 'x', messageId: '1' });
      await client.close();
      expect(emulator.queue('Persons_cdc_events')!.messages).toHaveLength(1);
    } finally {
      await emulator.close();
    }
  });
});
