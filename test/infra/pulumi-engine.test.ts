/**
 * The Pulumi engine's own code paths: what it hands the Automation API (programs with their
 * resource options, environment), with only the CLI-backed stack replaced (test/support/
 * pulumi-stack.ts runs dstream's real program under setMocks), the decisions as plain functions,
 * and the namespace seen through the real administration client against the test current().
 */
import { ServiceBusClient } from '@azure/service-bus';
import { beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../lib/index.js';
import { desiredQueues } from '../../lib/infra/desired.js';
import { PulumiEngine, pulumiEnv } from '../../lib/infra/pulumi-engine.js';
import { checkStackName, programPlan, queueArgs } from '../../lib/infra/pulumi-plan.js';
import { adminClient, ownershipMark } from '../../lib/infra/service-bus-admin.js';
import { useBroker } from '../support/use-broker.js';
import { fakeStack, installMocks } from '../support/pulumi-stack.js';

beforeAll(installMocks);
const target = { resourceGroupName: 'rg-shop', namespaceName: 'shop-prod' };
const TABLES = ['Persons', 'Orders'];
const inStack = (tables: string[], task = 'shop') => desiredQueues(tables).map((d) => ({ name: d.name, inputs: queueArgs(d, target, task), retainOnDelete: true }));

const current = useBroker();

const engine = (stack: ReturnType<typeof fakeStack>, extra: Partial<ConstructorParameters<typeof PulumiEngine>[0]> = {}) =>
  new PulumiEngine({ ...target, task: 'shop', stateDir: '/tmp/dstream-test-pulumi', openStack: stack.open, env: {}, ...extra });
const withAdmin = () => ({ admin: adminClient({ connectionString: current().connectionString }), endpoint: current().host() });

describe('Pulumi init never deletes a queue', () => {
  it('an empty discovery declares every queue the stack holds, each with retainOnDelete, and deletes none', async () => {
    const stack = fakeStack(inStack(TABLES));
    const result = await engine(stack).init(desiredQueues([]));
    const up = stack.ops.filter((o) => o.op === 'up');
    expect(up).toHaveLength(1);
    expect(up[0]!.declared.map((d) => [d.name, d.retainOnDelete])).toEqual([
      ['Persons_cdc_events', true],
      ['Orders_cdc_events', true],
    ]);
    expect(stack.deleted).toEqual([]);
    expect(stack.state.map((s) => s.urn.split('::').pop())).toEqual(['Persons_cdc_events', 'Orders_cdc_events']);
    expect(result.summary).toBe('Applied: 0 created, 0 changed, 0 destroyed.');
    expect(result.resources).toEqual([
      { kind: 'queue', name: 'Persons_cdc_events', action: 'unchanged', reason: 'no longer in the task: kept (destroy removes it)' },
      { kind: 'queue', name: 'Orders_cdc_events', action: 'unchanged', reason: 'no longer in the task: kept (destroy removes it)' },
    ]);
  });

  it('a table missing from discovery keeps its queue; a new one is created', async () => {
    const stack = fakeStack(inStack(TABLES));
    const result = await engine(stack).init(desiredQueues(['Persons', 'Customers']));
    expect(stack.deleted).toEqual([]);
    expect(result.resources.map((r) => `${r.action} ${r.name}`)).toEqual(['unchanged Persons_cdc_events', 'create Customers_cdc_events', 'unchanged Orders_cdc_events']);
    expect(stack.state.every((s) => s.retainOnDelete)).toBe(true);
  });
});

describe('Pulumi destroy', () => {
  async function send(queue: string, n: number) {
    const client = new ServiceBusClient(current().connectionString);
    const sender = client.createSender(queue);
    await sender.sendMessages(Array.from({ length: n }, (_, i) => ({ body: `m${i}` })));
    await client.close();
  }

  it('keeps a queue that still holds messages, deletes the empty ones, and keeps the stack', async () => {
    for (const t of TABLES) current().createQueue(`${t}_cdc_events`, { requiresDuplicateDetection: true });
    await send('Orders_cdc_events', 3);
    const stack = fakeStack(inStack(TABLES));
    const result = await engine(stack, withAdmin()).destroy();
    expect(stack.deleted).toEqual(['Persons_cdc_events']);
    // First retainOnDelete is turned off on the queue to delete, then only the kept one stays declared.
    expect(stack.ops.map((o) => [o.op, o.declared.map((d) => `${d.name}:${d.retainOnDelete}`)])).toEqual([
      ['up', ['Persons_cdc_events:false', 'Orders_cdc_events:true']],
      ['up', ['Orders_cdc_events:true']],
    ]);
    expect(stack.removed).toBe(false);
    expect(result.resources).toEqual([
      { kind: 'queue', name: 'Persons_cdc_events', action: 'delete' },
      { kind: 'queue', name: 'Orders_cdc_events', action: 'blocked', warnings: ['queue Orders_cdc_events holds 3 messages not yet received: kept; drain it, or set force_destroy = true to delete it with its messages'] },
    ]);
    expect(result.summary).toBe('1 destroyed; 1 kept (they hold messages): stack "shop" stays');
  });

  it('with force_destroy deletes them all and removes the stack', async () => {
    const stack = fakeStack(inStack(TABLES));
    const result = await engine(stack, { forceDestroy: true }).destroy();
    expect(stack.deleted.sort()).toEqual(['Orders_cdc_events', 'Persons_cdc_events']);
    expect(stack.removed).toBe(true);
    expect(result.summary).toBe('2 destroyed; stack "shop" removed');
  });

  it('without a connection to count messages, keeps every queue and says why', async () => {
    const stack = fakeStack(inStack(['Persons']));
    const result = await engine(stack).destroy();
    expect(stack.deleted).toEqual([]);
    expect(result.resources[0]).toMatchObject({ action: 'blocked', warnings: [expect.stringMatching(/^cannot tell whether queue Persons_cdc_events holds messages .*set force_destroy = true/)] });
  });
});

describe('Pulumi and queues that exist outside the stack', () => {
  it('plans a queue made for this task by on_missing_queue or the sdk engine as exists, and init imports it', async () => {
    const made = current().createQueue('Persons_cdc_events', { requiresDuplicateDetection: true });
    made.description = { UserMetadata: ownershipMark('shop'), RequiresDuplicateDetection: 'true', MaxDeliveryCount: '10' };
    const stack = fakeStack();
    const plan = await engine(stack, withAdmin()).plan(desiredQueues(['Persons', 'Orders'], undefined, { maxDeliveryCount: 4 }));
    expect(plan.resources.map((r) => `${r.action} ${r.name}`)).toEqual(['exists Persons_cdc_events', 'create Orders_cdc_events']);
    expect(plan.resources[0]!.reason).toMatch(/init adopts it \(import\)/);
    expect(stack.ops[0]!.declared.map((d) => d.name)).toEqual(['Orders_cdc_events']); // never planned as a create

    const init = await engine(stack, withAdmin()).init(desiredQueues(['Persons', 'Orders'], undefined, { maxDeliveryCount: 4 }));
    const [adopt, apply] = stack.ops.filter((o) => o.op === 'up');
    const imported = adopt!.declared.find((d) => d.name === 'Persons_cdc_events')!;
    expect(imported.importId).toBe('/subscriptions/sub-0001/resourceGroups/rg-shop/providers/Microsoft.ServiceBus/namespaces/shop-prod/queues/Persons_cdc_events');
    expect(imported.inputs.maxDeliveryCount).toBe(10); // as found: an import must match
    expect(apply!.declared.find((d) => d.name === 'Persons_cdc_events')!).toMatchObject({ importId: '', inputs: expect.objectContaining({ maxDeliveryCount: 4 }) });
    expect(init.resources[0]).toMatchObject({ name: 'Persons_cdc_events', action: 'update', reason: 'adopted into the stack (import)' });
    expect(stack.deleted).toEqual([]);
  });

  it('leaves a queue someone else made alone, and does not declare it', async () => {
    current().createQueue('Persons_cdc_events', { requiresDuplicateDetection: false });
    const stack = fakeStack();
    const init = await engine(stack, withAdmin()).init(desiredQueues(['Persons']));
    expect(stack.ops[0]!.declared).toEqual([]);
    expect(init.resources[0]).toMatchObject({ action: 'exists-unmanaged', reason: 'exists, not created by dstream: left alone (messages are still sent to it)' });
    expect(init.resources[0]!.warnings).toEqual([expect.stringMatching(/^duplicate detection is off on this queue/)]);
  });
});

describe('Pulumi settings fixed at creation', () => {
  it('plan shows a replace with a warning; init keeps the queue and changes only what Service Bus can change', async () => {
    const stack = fakeStack(inStack(['Persons']));
    const changed = desiredQueues(['Persons'], undefined, { requiresSession: true, maxDeliveryCount: 3 });
    const plan = await engine(stack).plan(changed);
    expect(stack.ops[0]!.declared[0]!.replaceOnChanges).toEqual(['requiresDuplicateDetection', 'requiresSession', 'enablePartitioning']);
    expect(plan.resources[0]).toMatchObject({ action: 'replace', warnings: [expect.stringMatching(/^requiresSession is false, the task asks true; Service Bus fixes it at creation: init keeps the queue/)] });
    const init = await engine(stack).init(changed);
    expect(init.resources[0]!.action).toBe('update');
    expect(stack.state[0]!.inputs).toMatchObject({ maxDeliveryCount: 3 });
    expect(stack.state[0]!.inputs.requiresSession).toBeUndefined();
    expect(stack.deleted).toEqual([]);
  });
});

describe('Pulumi environment and names', () => {
  it('sets PULUMI_CONFIG_PASSPHRASE only when the user set neither it nor PULUMI_CONFIG_PASSPHRASE_FILE', async () => {
    expect(pulumiEnv({}, 'file:///s')).toMatchObject({ PULUMI_CONFIG_PASSPHRASE: '' });
    expect(pulumiEnv({ PULUMI_CONFIG_PASSPHRASE_FILE: '/run/secrets/p' }, 'file:///s')).toEqual({ PULUMI_BACKEND_URL: 'file:///s', PULUMI_SKIP_UPDATE_CHECK: 'true', PULUMI_CONFIG_PASSPHRASE_FILE: '/run/secrets/p' });
    expect(pulumiEnv({ PULUMI_CONFIG_PASSPHRASE: 'p' }, 'file:///s')).toMatchObject({ PULUMI_CONFIG_PASSPHRASE: 'p' });
    const stack = fakeStack();
    await engine(stack, { env: { PULUMI_CONFIG_PASSPHRASE_FILE: '/run/secrets/p' } }).plan(desiredQueues(['Persons']));
    expect(stack.opened[0]![1].envVars).not.toHaveProperty('PULUMI_CONFIG_PASSPHRASE');
  });

  it('checks the task name against Pulumi\'s stack name rules before anything runs', () => {
    expect(checkStackName('shop-prod_2.a')).toBe('shop-prod_2.a');
    const stack = fakeStack();
    for (const bad of ['shop prod', 'shop/prod', '', 'x'.repeat(101)]) {
      expect(() => engine(stack, { task: bad })).toThrow(expect.objectContaining({ code: ErrorCodes.INVALID_OPTION }));
    }
    expect(stack.opened).toEqual([]);
  });

  it('plans without a connection with a warning that queues outside the stack cannot be seen', () => {
    const plan = programPlan('plan', desiredQueues(['Persons']), [], undefined, target, 'shop');
    expect(plan.reports[0]!.warnings).toEqual([expect.stringMatching(/^no connection string or namespace to list the queues outside the stack/)]);
  });
});
