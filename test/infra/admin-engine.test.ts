import { ServiceBusClient } from '@azure/service-bus';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCodes, ExitCodes } from '../../lib/index.js';
import { AdminEngine } from '../../lib/infra/admin-engine.js';
import { desiredQueues } from '../../lib/infra/desired.js';
import { adminClient, ownershipOf } from '../../lib/infra/service-bus-admin.js';
import { TestBroker } from '../support/asb-broker.js';
import { ndjson, ROOT, spawnNode } from '../support/process.js';

let broker: TestBroker;
beforeEach(async () => {
  broker = await TestBroker.start();
  broker.createQueue('Orders_cdc_events'); // made by someone else: no dstream mark
});
afterEach(async () => {
  await broker.close();
  expect(broker.errors).toEqual([]);
});

const engine = (task = 'shop') => new AdminEngine(adminClient({ connectionString: broker.connectionString }), { task, endpoint: broker.host(), retry: { baseDelayMs: 5, maxDelayMs: 20 } });
const actions = (r: { resources: Array<{ name: string; action?: string }> }) => r.resources.map((x) => `${x.action} ${x.name}`);
const TABLES = ['Persons', 'Orders', 'Customers'];
const NO_DEDUP = 'duplicate detection is off on this queue: records sent again after a failure arrive twice (delivery is at-least-once, not effectively-once)';

describe('the administration-client engine', () => {
  it('plans, creates, reports and destroys only what the task owns', async () => {
    const desired = desiredQueues(TABLES);
    const plan = await engine().plan(desired);
    expect(actions(plan)).toEqual(['create Persons_cdc_events', 'exists-unmanaged Orders_cdc_events', 'create Customers_cdc_events']);
    expect(plan.summary).toBe('Plan: 2 to create, 0 to change, 0 to destroy; 1 existing queue not managed by this task.');
    expect(broker.queue('Persons_cdc_events')).toBeUndefined(); // plan changes nothing

    const init = await engine().init(desired);
    expect(init.summary).toBe('Applied: 2 created, 0 changed, 0 destroyed; 1 existing queue not managed by this task.');
    expect(ownershipOf(broker.queue('Persons_cdc_events')!.description!.UserMetadata)).toEqual({ 'managed-by': 'dstream', task: 'shop' });
    expect(broker.queue('Persons_cdc_events')!.requiresDuplicateDetection).toBe(true);

    const puts = broker.adminRequests.filter((r) => r.method === 'PUT').length;
    const again = await engine().init(desired);
    expect(actions(again)).toEqual(['unchanged Persons_cdc_events', 'exists-unmanaged Orders_cdc_events', 'unchanged Customers_cdc_events']);
    expect(broker.adminRequests.filter((r) => r.method === 'PUT').length).toBe(puts); // idempotent: nothing re-created

    const status = await engine().status(desired);
    expect(status.resources[0]).toMatchObject({ name: 'Persons_cdc_events', exists: true, managed: true, activeMessages: 0 });
    expect(status.resources[1]).toMatchObject({ name: 'Orders_cdc_events', exists: true, managed: false });
    expect(status.summary).toBe('3 of 3 queues exist');

    expect(actions(await engine('another-task').destroy())).toEqual(['exists-unmanaged Customers_cdc_events', 'exists-unmanaged Persons_cdc_events']);
    expect(broker.queue('Persons_cdc_events')).toBeDefined();
    const destroyed = await engine().destroy();
    expect(actions(destroyed)).toEqual(['delete Customers_cdc_events', 'delete Persons_cdc_events']);
    expect([...broker.queues.values()].map((q) => q.name)).toEqual(['Orders_cdc_events']);
  });

  it('keeps a queue whose table left the task, or every queue on an empty discovery: only destroy removes', async () => {
    await engine().init(desiredQueues(TABLES));
    const fewer = desiredQueues(['Persons']);
    const plan = await engine().plan(fewer);
    expect(plan.resources).toContainEqual({ kind: 'queue', name: 'Customers_cdc_events', action: 'unchanged', reason: 'no longer in the task: kept (destroy removes it)' });
    expect(plan.summary).toBe('Plan: 0 to create, 0 to change, 0 to destroy.');
    await engine().init(fewer);
    expect((await engine().init(desiredQueues([]))).summary).toMatch(/0 destroyed/);
    expect(broker.queue('Customers_cdc_events')).toBeDefined();
    expect(broker.queue('Persons_cdc_events')).toBeDefined();
  });

  it('destroy keeps a queue that still holds messages unless force_destroy', async () => {
    await engine().init(desiredQueues(['Persons', 'Customers']));
    const client = new ServiceBusClient(broker.connectionString);
    await client.createSender('Persons_cdc_events').sendMessages([{ body: 'a' }, { body: 'b' }]);
    await client.close();
    const kept = await engine().destroy();
    expect(kept.resources).toEqual([
      { kind: 'queue', name: 'Customers_cdc_events', action: 'delete' },
      { kind: 'queue', name: 'Persons_cdc_events', action: 'blocked', warnings: ['queue Persons_cdc_events holds 2 messages not yet received: kept; drain it, or set force_destroy = true to delete it with its messages'] },
    ]);
    expect(kept.summary).toBe('1 destroyed; 1 kept (they hold messages); 0 left alone (not created by task "shop")');
    expect(broker.queue('Persons_cdc_events')!.messages).toHaveLength(2);
    const forced = new AdminEngine(adminClient({ connectionString: broker.connectionString }), { task: 'shop', endpoint: broker.host(), forceDestroy: true });
    expect(actions(await forced.destroy())).toEqual(['delete Persons_cdc_events']);
    expect(broker.queue('Persons_cdc_events')).toBeUndefined();
  });

  it('plans and applies changed settings of the task\'s queues, and warns about ones Service Bus cannot change', async () => {
    await engine().init(desiredQueues(['Persons'], undefined, { maxDeliveryCount: 10 }));
    const changed = desiredQueues(['Persons'], undefined, { maxDeliveryCount: 4, lockDuration: 'PT3M', requiresSession: true });
    const plan = await engine().plan(changed);
    expect(plan.resources[0]).toMatchObject({
      name: 'Persons_cdc_events',
      action: 'update',
      changes: ['lockDuration: PT1M -> PT3M', 'maxDeliveryCount: 10 -> 4'],
      warnings: ['requiresSession is false, the task asks true; Service Bus cannot change it after creation (destroy and init to re-create)'],
    });
    expect(plan.summary).toBe('Plan: 0 to create, 1 to change, 0 to destroy.');
    const applied = await engine().init(changed);
    expect(applied.summary).toBe('Applied: 0 created, 1 changed, 0 destroyed.');
    const q = await adminClient({ connectionString: broker.connectionString }).getQueue('Persons_cdc_events');
    expect(q).toMatchObject({ maxDeliveryCount: 4, lockDuration: 'PT3M', requiresSession: false });
    expect(ownershipOf(q.userMetadata)?.task).toBe('shop'); // the mark survives the update
    expect((await engine().plan(changed)).resources[0]!.action).toBe('unchanged');
  });

  it('warns in plan, init and status where effectively-once does not hold (a queue without duplicate detection)', async () => {
    const desired = desiredQueues(['Persons', 'Orders', 'Accounts'], undefined, {});
    const off = desiredQueues(['Accounts'], undefined, { requiresDuplicateDetection: false })[0]!;
    desired[2] = off;
    const plan = await engine().plan(desired);
    expect(plan.resources.map((r) => r.warnings)).toEqual([undefined, [NO_DEDUP], [NO_DEDUP]]);
    expect((await engine().init(desired)).resources[1]!.warnings).toEqual([NO_DEDUP]);
    const status = await engine().status(desired);
    expect(status.resources.map((r) => r.warnings)).toEqual([undefined, [NO_DEDUP], [NO_DEDUP]]);
  });

  it('compares settings as Service Bus reports them: PT60S is PT1M, a partitioned queue\'s size is 16 times the size given', async () => {
    const settings = { lockDuration: 'PT60S', duplicateDetectionHistoryTimeWindow: 'PT600S', enablePartitioning: true, maxSizeInMegabytes: 1024 };
    await engine().init(desiredQueues(['Persons'], undefined, settings));
    const q = await adminClient({ connectionString: broker.connectionString }).getQueue('Persons_cdc_events');
    expect(q).toMatchObject({ lockDuration: 'PT1M', duplicateDetectionHistoryTimeWindow: 'PT10M', maxSizeInMegabytes: 16384 });
    const puts = broker.adminRequests.filter((r) => r.method === 'PUT').length;
    const plan = await engine().plan(desiredQueues(['Persons'], undefined, settings));
    expect(plan.resources[0]).toMatchObject({ action: 'unchanged' });
    expect(plan.resources[0]!.changes).toBeUndefined();
    await engine().init(desiredQueues(['Persons'], undefined, settings));
    expect(broker.adminRequests.filter((r) => r.method === 'PUT').length).toBe(puts); // no re-PUT on every init
    const bigger = await engine().plan(desiredQueues(['Persons'], undefined, { ...settings, maxSizeInMegabytes: 2048 }));
    expect(bigger.resources[0]).toMatchObject({ action: 'update', changes: ['maxSizeInMegabytes: 16384 -> 2048'] });
  });

  it('refuses settings Service Bus would refuse before any request, naming the option and what it takes', () => {
    for (const [settings, text] of [
      [{ maxSizeInMegabytes: 1000 }, 'queue_max_size_mb = 1000: Service Bus takes 1024, 2048, 3072, 4096 or 5120 (Standard)'],
      [{ lockDuration: 'PT6M' }, 'queue_lock_duration = "PT6M": Service Bus takes 5 seconds to 5 minutes'],
      [{ duplicateDetectionHistoryTimeWindow: 'PT10S' }, 'queue_duplicate_detection_window = "PT10S": Service Bus takes 20 seconds to 7 days'],
      [{ duplicateDetectionHistoryTimeWindow: 'ten minutes' }, 'queue_duplicate_detection_window = "ten minutes": not an ISO-8601 duration'],
    ] as const) {
      const err = (() => {
        try {
          desiredQueues(['Persons'], undefined, settings);
        } catch (e) {
          return e as { code: string; message: string };
        }
      })();
      expect(err?.code).toBe(ErrorCodes.INVALID_OPTION);
      expect(err?.message).toContain(text);
    }
    expect(broker.adminRequests).toEqual([]);
  });

  it('refuses colliding names before any request', () => {
    expect(() => desiredQueues(['Persons', 'hr.PERSONS'])).toThrow(expect.objectContaining({ code: ErrorCodes.DESTINATION_COLLISION }));
    expect(broker.adminRequests).toEqual([]);
  });

  it('rides out management throttling', async () => {
    broker.adminFaults.busyNext = 3;
    const init = await engine().init(desiredQueues(TABLES));
    expect(init.summary).toMatch(/^Applied: 2 created/);
    expect(broker.adminRequests.filter((r) => r.status === 503)).toHaveLength(3);
  });

  it('answers plan, init, status and destroy as a provider process', async () => {
    const bin = `${ROOT}dist/bin/asb-sink.js`;
    const header = (command: string, extra: Record<string, unknown> = {}) =>
      ndjson({ command, config: { connection_string: broker.connectionString }, task: 'shop', protocol: 1, streams: [{ name: 'Persons' }, { name: 'Orders', schema: 'dbo' }], ...extra });
    const plan = await spawnNode(bin, [], { input: header('plan') });
    expect(plan.code).toBe(0);
    expect(plan.lines()).toEqual([
      { status: 'ready', protocol: 1 },
      {
        status: 'ok',
        command: 'plan',
        resources: [
          { kind: 'queue', name: 'Persons_cdc_events', action: 'create', table: 'dbo.Persons' },
          { kind: 'queue', name: 'Orders_cdc_events', action: 'exists-unmanaged', table: 'dbo.Orders', warnings: [NO_DEDUP] },
        ],
        summary: 'Plan: 1 to create, 0 to change, 0 to destroy; 1 existing queue not managed by this task.',
      },
    ]);
    expect((await spawnNode(bin, [], { input: header('init') })).lines()[1]).toMatchObject({ status: 'ok', command: 'init' });
    const status = await spawnNode(bin, [], { input: header('status') });
    expect(status.lines()[1]).toMatchObject({ status: 'ok', command: 'status', summary: '2 of 2 queues exist' });
    const destroy = await spawnNode(bin, [], { input: header('destroy') });
    expect(destroy.lines()[1]).toMatchObject({ status: 'ok', command: 'destroy', resources: [{ kind: 'queue', name: 'Persons_cdc_events', action: 'delete' }] });
    // With resource_group the Pulumi engine answers; with no Pulumi CLI, a clear error and exit 1.
    const { dirname } = await import('node:path');
    const pulumi = await spawnNode(bin, [], {
      input: ndjson({ command: 'plan', config: { connection_string: broker.connectionString, resource_group: 'rg-shop', state_dir: `${ROOT}node_modules/.cache/dstream-test-state` }, task: 'shop', streams: [{ name: 'Persons' }] }),
      env: { PATH: dirname(process.execPath) },
    });
    expect(pulumi.code).toBe(ExitCodes.FAILURE);
    expect(pulumi.lines()[1]).toMatchObject({ status: 'error', command: 'plan', code: ErrorCodes.PROVISIONER });
    expect(pulumi.stderr).toMatch(/^asb-sink: pulumi preview failed: the Pulumi CLI was not found: install the Pulumi CLI/m);
    expect(pulumi.stderr).not.toMatch(/\n\s+at /);
    const noTask = await spawnNode(bin, [], { input: header('destroy', { task: undefined }) });
    expect(noTask.code).toBe(ExitCodes.USAGE);
    expect(noTask.lines()[1]).toMatchObject({ status: 'error', command: 'destroy', code: ErrorCodes.INVALID_OPTION });
  });
});
