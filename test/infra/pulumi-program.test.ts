import { mkdtempSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../lib/index.js';
import { desiredQueues } from '../../lib/infra/desired.js';
import { PulumiEngine } from '../../lib/infra/pulumi-engine.js';
import { programPlan } from '../../lib/infra/pulumi-plan.js';
import { namespaceNameOf, queueProgram } from '../../lib/infra/pulumi-program.js';
import { skipWith } from '../support/containers.js';
import { installMocks, runProgram, type Registration } from '../support/pulumi-stack.js';

const declared: Registration[] = [];
beforeAll(installMocks);

const target = { resourceGroupName: 'rg-shop', namespaceName: 'shop-prod' };
const program = (desired: ReturnType<typeof desiredQueues>) => async () => {
  const outputs = queueProgram(programPlan('init', desired, [], undefined, target, 'shop').declarations, target);
  declared.push(...(await runProgram(outputs)));
  return {};
};

describe('the Pulumi program, under pulumi.runtime.setMocks', () => {
  it('declares exactly one Queue per table, named by the template, with every configured setting', async () => {
    declared.length = 0;
    const desired = desiredQueues(['Persons', 'sales.Orders', 'Customers'], '{schema}-{table}', {
      maxSizeInMegabytes: 2048,
      lockDuration: 'PT2M',
      maxDeliveryCount: 7,
      defaultMessageTimeToLive: 'P14D',
      deadLetteringOnMessageExpiration: true,
      duplicateDetectionHistoryTimeWindow: 'PT30M',
      enablePartitioning: true,
      requiresSession: false,
    });
    await program(desired)();
    expect(declared.map((d) => [d.type, d.name])).toEqual([
      ['azure-native:servicebus:Queue', 'dbo-Persons'],
      ['azure-native:servicebus:Queue', 'sales-Orders'],
      ['azure-native:servicebus:Queue', 'dbo-Customers'],
    ]);
    expect(declared[1]!.inputs).toEqual({
      queueName: 'sales-Orders',
      namespaceName: 'shop-prod',
      resourceGroupName: 'rg-shop',
      maxSizeInMegabytes: 2048,
      lockDuration: 'PT2M',
      maxDeliveryCount: 7,
      defaultMessageTimeToLive: 'P14D',
      deadLetteringOnMessageExpiration: true,
      requiresDuplicateDetection: true,
      duplicateDetectionHistoryTimeWindow: 'PT30M',
      enablePartitioning: true,
      requiresSession: false,
      userMetadata: '{"managed-by":"dstream","task":"shop"}',
    });
    // Every queue outlives its removal from the program: only destroy deletes.
    expect(declared.map((d) => d.retainOnDelete)).toEqual([true, true, true]);
  });

  it('turns duplicate detection on by default', async () => {
    declared.length = 0;
    await program(desiredQueues(['Persons']))();
    expect(declared[0]!.inputs).toMatchObject({ requiresDuplicateDetection: true, duplicateDetectionHistoryTimeWindow: 'PT10M' });
  });

  it('rejects colliding names before any resource is declared', async () => {
    declared.length = 0;
    expect(() => desiredQueues(['Persons', 'hr.PERSONS'])).toThrow(expect.objectContaining({ code: ErrorCodes.DESTINATION_COLLISION }));
    expect(declared).toEqual([]);
  });

  it('derives the namespace from a connection string', () => {
    expect(namespaceNameOf('Endpoint=sb://shop-prod.servicebus.windows.net/;SharedAccessKeyName=x;SharedAccessKey=y')).toBe('shop-prod');
  });
});

describe('the Automation API engine', () => {
  it('says clearly that the Pulumi CLI is missing, and what to do, without a stack trace', async () => {
    const emptyPath = mkdtempSync(join(tmpdir(), 'dstream-nopulumi-'));
    const saved = process.env.PATH;
    process.env.PATH = emptyPath;
    try {
      const engine = new PulumiEngine({ ...target, task: 'shop', stateDir: mkdtempSync(join(tmpdir(), 'dstream-state-')) });
      const err = await engine.plan(desiredQueues(['Persons'])).catch((e) => e);
      expect(err.code).toBe(ErrorCodes.PROVISIONER);
      expect(err.message).toMatch(/^pulumi preview failed: the Pulumi CLI was not found: install the Pulumi CLI \(https:\/\/www\.pulumi\.com\/.+\) and put it on PATH, or use provisioner = "sdk"/);
      expect(err.message).not.toMatch(/\n\s+at /);
    } finally {
      process.env.PATH = saved;
    }
  }, 30_000);

  it('previews the program for real where the Pulumi CLI is installed', async (ctx) => {
    let version: string;
    try {
      version = execFileSync('pulumi', ['version'], { encoding: 'utf8' }).trim();
    } catch {
      skipWith(ctx, 'the Pulumi CLI is not on PATH');
    }
    const engine = new PulumiEngine({ ...target, task: `test-${process.pid}`, stateDir: mkdtempSync(join(tmpdir(), 'dstream-state-')) });
    const result = await engine.plan(desiredQueues(['Persons', 'Orders'])).catch((e) => e);
    if (process.env.ARM_SUBSCRIPTION_ID) {
      expect(result.summary, `pulumi ${version}`).toBe('Plan: 2 to create, 0 to change, 0 to destroy.');
    } else {
      // No Azure here: the failure must say what is missing, not dump a trace.
      expect(result.code).toBe(ErrorCodes.PROVISIONER);
      expect(result.message).toMatch(/^pulumi preview failed: /);
    }
  }, 300_000);

  it('never deletes a queue on an empty discovery, for real, where the Pulumi CLI and Azure credentials are at hand', async (ctx) => {
    try {
      execFileSync('pulumi', ['version'], { encoding: 'utf8' });
    } catch {
      skipWith(ctx, 'the Pulumi CLI is not on PATH');
    }
    if (!process.env.ARM_SUBSCRIPTION_ID || !process.env.DSTREAM_TEST_RESOURCE_GROUP || !process.env.DSTREAM_TEST_NAMESPACE) {
      skipWith(ctx, 'needs Azure: ARM_* credentials, DSTREAM_TEST_RESOURCE_GROUP and DSTREAM_TEST_NAMESPACE (a namespace to create test queues in)');
    }
    const real = { resourceGroupName: process.env.DSTREAM_TEST_RESOURCE_GROUP!, namespaceName: process.env.DSTREAM_TEST_NAMESPACE! };
    const engine = new PulumiEngine({ ...real, task: `test-${process.pid}`, stateDir: mkdtempSync(join(tmpdir(), 'dstream-state-')), forceDestroy: true });
    try {
      await engine.init(desiredQueues([`Persons${process.pid}`]));
      const again = await engine.init(desiredQueues([]));
      expect(again.resources.map((r) => r.action)).toEqual(['unchanged']);
      expect((await engine.status(desiredQueues([`Persons${process.pid}`]))).resources[0]).toMatchObject({ managed: true });
    } finally {
      await engine.destroy();
    }
  }, 600_000);
});
