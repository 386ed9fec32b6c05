/**
 * The delivery tests against a real Service Bus: the official emulator in a container where a
 * container runtime exists, or a namespace given by DSTREAM_TEST_ASB (a connection string with
 * Manage rights: the test creates and deletes its own queues). Skipped, with the reason printed,
 * where neither is available.
 */
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ServiceBusAdministrationClient, ServiceBusClient } from '@azure/service-bus';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkpoint, toServiceBus, type CheckpointEnvelope, type Envelope } from '../../lib/index.js';
import { containerRuntime, skipWith, startNetwork, startServiceBusEmulator, startSqlServer } from '../support/containers.js';

const TABLES = ['Persons', 'Orders', 'Customers'];

let connectionString: string | undefined;
let prefix = '';
let skipReason: string | undefined;
const cleanups: Array<() => Promise<unknown>> = [];

async function startEmulator(queues: string[]): Promise<string> {
  const network = await startNetwork(cleanups);
  await startSqlServer(cleanups, network);
  return startServiceBusEmulator(cleanups, network, queues);
}

beforeAll(async () => {
  const given = process.env.DSTREAM_TEST_ASB;
  if (given) {
    prefix = `dstream-test-${randomUUID().slice(0, 8)}-`;
    const admin = new ServiceBusAdministrationClient(given);
    for (const t of TABLES) {
      const name = `${prefix}${t}_cdc_events`;
      await admin.createQueue(name, { requiresDuplicateDetection: true });
      cleanups.push(() => admin.deleteQueue(name));
    }
    connectionString = given;
    return;
  }
  const runtime = await containerRuntime();
  if (!runtime.ok) {
    skipReason = `${runtime.reason}; set DSTREAM_TEST_ASB to a connection string to run these against a namespace`;
    return;
  }
  connectionString = await startEmulator(TABLES.map((t) => `${t}_cdc_events`));
}, 600_000);

afterAll(async () => {
  for (const c of cleanups) await c();
}, 120_000);

function change(table: string, n: number): Envelope {
  return {
    source: 'mssql-cdc',
    type: 'cdc',
    data: { Id: n, Name: `row ${n}` },
    metadata: { TableName: table, OperationType: 'Insert', LSN: `0x${n.toString(16).padStart(20, '0')}`, Seq: '0x01' },
  };
}

describe('Service Bus delivery against a real Service Bus (emulator or namespace)', () => {
  it('delivers every envelope once, in order per queue, and acknowledges checkpoints after their rows', async (ctx) => {
    if (connectionString === undefined) skipWith(ctx, skipReason ?? 'no Service Bus available');
    const input: Envelope[] = [];
    for (let i = 1; i <= 600; i++) {
      input.push(change(TABLES[i % 3]!, i));
      if (i % 50 === 0) input.push(checkpoint(i));
    }
    const acked: unknown[] = [];
    await pipeline(
      Readable.from(input),
      toServiceBus({ connectionString, template: `${prefix}{table}_cdc_events`, onCheckpoint: (cp: CheckpointEnvelope) => void acked.push(cp.data.position) }),
    );
    expect(acked).toEqual(input.filter((e) => e.type === 'checkpoint').map((e) => (e as CheckpointEnvelope).data.position));
    const client = new ServiceBusClient(connectionString);
    for (const t of TABLES) {
      const receiver = client.createReceiver(`${prefix}${t}_cdc_events`);
      const got: unknown[] = [];
      for (;;) {
        const batch = await receiver.receiveMessages(100, { maxWaitTimeInMs: 2000 });
        if (batch.length === 0) break;
        for (const m of batch) {
          got.push(m.body);
          await receiver.completeMessage(m);
        }
      }
      expect(got).toEqual(input.filter((e) => e.metadata?.TableName === t));
    }
    await client.close();
  }, 120_000);
});
