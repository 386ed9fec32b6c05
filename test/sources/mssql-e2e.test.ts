/**
 * The whole lifecycle of a SQL Server to Service Bus task on this machine: the built-in mssql-cdc
 * provider reaching the CDC model through the real driver and the TDS test server as input, the Service Bus provider against the AMQP test broker and its
 * administration endpoint as output, positions in the SQL checkpoint store.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseTaskFile } from '../../lib/config/tasks.js';
import { formatReport } from '../../lib/cli/report.js';
import type { Envelope } from '../../lib/envelope/types.js';
import { BUILTINS } from '../../lib/providers/builtins.js';
import { runTask, taskVerb } from '../../lib/executor/executor.js';
import { SqlCheckpointStore } from '../../lib/state/sql-store.js';
import { FileStateStore } from '../../lib/state/state-store.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestBroker } from '../support/asb-broker.js';
import { until } from '../support/streams.js';
import { sqlServerConnector } from '../../lib/sources/mssql/sqlserver.js';
import { shopModel, type CdcModel } from '../support/cdc-model.js';
import { startSqlServer, type TestSqlServer } from '../support/sql-server.js';

let broker: TestBroker;
let model: CdcModel;
let sql: TestSqlServer;
const builtins = BUILTINS;
beforeEach(async () => {
  broker = await TestBroker.start();
  model = shopModel();
  sql = await startSqlServer(model);
});
afterEach(async () => {
  await sql.close();
  await broker.close();
  expect(broker.errors).toEqual([]);
});

const QUEUES = ['Persons_cdc_events', 'Orders_cdc_events', 'Customers_cdc_events'];

async function shopTask() {
  const file = await parseTaskFile(
    `task "shop" {
  type = "providers"
  input {
    provider = "mssql-cdc"
    config {
      connection_string = "${sql.connectionString}"
      tables = ["Persons", "sales.Orders", "Customers"]
      start = "earliest"
      poll_interval_ms = 5
      max_poll_interval_ms = 20
      checkpoint_every_rows = 25
      max_transactions = 40
      create_checkpoint_table = true
      progress_ms = 0
    }
  }
  output {
    provider = "asb-sink"
    config {
      connection_string = "${broker.connectionString}"
      linger_ms = 2
      progress_ms = 0
      quiet = true
    }
  }
}
`,
    'shop.hcl',
  );
  return file.tasks[0]!;
}

/** Commits `n` transactions over the three tables; returns, per table, what each queue must receive in order. */
function workload(m: CdcModel, from: number, n: number, expected: Map<string, string[]>): void {
  for (let i = from; i < from + n; i++) {
    const changes: Parameters<CdcModel['commit']>[0] = [{ table: 'Persons', op: 'insert', row: { Id: i, Name: `p${i}`, Email: `p${i}@example.com` } }];
    if (i % 2 === 0) changes.push({ table: 'sales.Orders', op: 'insert', row: { OrderId: String(i), CustomerId: i % 7, Total: `${i}.25` } });
    if (i % 3 === 0) changes.push({ table: 'Persons', op: 'update', row: { Id: i - 1, Name: `p${i - 1}'` } });
    if (i % 5 === 0) changes.push({ table: 'Customers', op: 'insert', row: { CustomerId: i, Company: `c${i}` } });
    if (i % 10 === 0) changes.push({ table: 'sales.Orders', op: 'delete', row: { OrderId: String(i) } });
    m.commit(changes);
    for (const c of changes) {
      const queue = `${c.table.replace('sales.', '')}_cdc_events`;
      const id = Object.values(c.row)[0];
      expected.get(queue)!.push(`${c.op}:${String(id)}`);
    }
  }
}

const delivered = (queue: string) =>
  (broker.bodies(queue) as Envelope[]).map((e) => `${String(e.metadata!.OperationType).toLowerCase()}:${String(Object.values(e.data as object)[0])}`);

describe('task: mssql-cdc (TDS test server) -> asb-sink (test broker)', () => {
  it('plan, init, run with a restart in the middle, status, destroy', async () => {
    const task = await shopTask();
    const store = new SqlCheckpointStore(sqlServerConnector(sql.connectionString), 'dstream.checkpoints');

    const plan = await taskVerb(task, 'plan', { builtins });
    expect(plan.streams.map((s) => `${s.schema}.${s.name}:${(s.keys ?? []).join(',')}`)).toEqual(['dbo.Persons:Id', 'sales.Orders:OrderId', 'dbo.Customers:CustomerId']);
    expect(plan.input!.resources).toEqual([
      { kind: 'cdc database', name: 'shop', action: 'unchanged' },
      { kind: 'cdc table', name: 'dbo.Persons', action: 'unchanged' },
      { kind: 'cdc table', name: 'sales.Orders', action: 'unchanged' },
      { kind: 'cdc table', name: 'dbo.Customers', action: 'unchanged' },
      { kind: 'checkpoint table', name: 'dstream.checkpoints', action: 'create' },
    ]);
    expect(plan.output.resources!.map((r) => `${r.action} ${r.name}`)).toEqual(QUEUES.map((q) => `create ${q}`));

    await taskVerb(task, 'init', { builtins });
    for (const q of QUEUES) expect(broker.queue(q)).toBeDefined();
    expect(model.hasTable('dstream.checkpoints')).toBe(true);

    const expected = new Map(QUEUES.map((q) => [q, [] as string[]]));
    workload(model, 1, 400, expected);
    const total = [...expected.values()].reduce((n, l) => n + l.length, 0);

    // First run: a slow queue, and a stop (as by Ctrl-C) after the first acknowledgements.
    broker.faults.delayMs = { persons_cdc_events: 30 };
    model.latencyMs = 3;
    const stop1 = new AbortController();
    const first = await runTask(task, { builtins, store, signal: stop1.signal, onAck: () => stop1.abort() });
    broker.faults.delayMs = {};
    model.latencyMs = 0;
    expect(first.stoppedBy).toBe('SIGTERM');
    const mid = await store.load('shop');
    expect(mid?.source).toBe('mssql-cdc');
    expect((mid!.position as { lsn: string }).lsn < model.currentMaxLsn!).toBe(true);
    const deliveredMid = QUEUES.reduce((n, q) => n + delivered(q).length, 0);
    expect(deliveredMid).toBeGreaterThan(0);
    expect(deliveredMid).toBeLessThan(total);

    // More changes while it was down; the second run resumes from the stored position.
    workload(model, 401, 100, expected);
    const all = [...expected.values()].reduce((n, l) => n + l.length, 0);
    const stop2 = new AbortController();
    await runTask(task, {
      builtins,
      store,
      signal: stop2.signal,
      onAck: (cp) => (cp.data.position as { lsn: string }).lsn === model.currentMaxLsn && stop2.abort(),
    });
    // Every change, in commit order, exactly once per queue (replays after the restart are
    // dropped by duplicate detection on the MessageId).
    for (const q of QUEUES) expect(delivered(q)).toEqual(expected.get(q));
    expect(QUEUES.reduce((n, q) => n + delivered(q).length, 0)).toBe(all);
    const lsns = (broker.bodies('Persons_cdc_events') as Envelope[]).map((e) => `${e.metadata!.LSN}${e.metadata!.Seq}`);
    expect([...lsns].sort()).toEqual(lsns);

    const stored = await store.load('shop');
    const status = await taskVerb(task, 'status', { builtins, position: stored!.position });
    expect(status.input!.resources).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ kind: 'cdc table', name: 'dbo.Persons', instance: 'dbo_Persons', position: model.currentMaxLsn, maxLsn: model.currentMaxLsn, lagSeconds: 0, pendingTransactions: 0 }),
        expect.objectContaining({ kind: 'cdc table', name: 'dbo.Customers', position: model.currentMaxLsn }),
      ]),
    );
    expect(status.output.resources!.map((r) => r.name)).toEqual(QUEUES);
    const text = formatReport(status, stored);
    expect(text).toContain(`Input:\n  ok cdc table dbo.Persons  (instance dbo_Persons, min lsn 0x00000000002A00000001, max lsn ${model.currentMaxLsn}, position ${model.currentMaxLsn}, columns 3, lag 0s, pending transactions 0)`);
    expect(text).toContain('Output:\n  ok queue Persons_cdc_events  (managed, active messages');

    const destroyed = await taskVerb(task, 'destroy', { builtins });
    // The queues still hold what run delivered: destroy keeps them, and says why, unless told.
    expect(destroyed.output.resources!.map((r) => r.action)).toEqual(QUEUES.map(() => 'blocked'));
    for (const q of QUEUES) expect(broker.queue(q)).toBeDefined();
    const forced = { ...task, output: { ...task.output, config: { ...task.output.config, force_destroy: true } } };
    await taskVerb(forced, 'destroy', { builtins });
    for (const q of QUEUES) expect(broker.queue(q)).toBeUndefined();
    // CDC was on before dstream: left as it was. The checkpoint table init created: dropped.
    expect(destroyed.input!.resources).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ kind: 'cdc table', name: 'dbo.Persons', action: 'exists-unmanaged' }),
        { kind: 'checkpoint table', name: 'dstream.checkpoints', action: 'delete' },
      ]),
    );
    expect(model.instances).toHaveLength(3);
    expect(model.hasTable('dstream.checkpoints')).toBe(false);
    await store.close();
  }, 60_000);

  it('two workers share a task through leases: one streams, the other takes over when it stops, nothing lost', async () => {
    const task = await shopTask();
    task.input.config = { ...task.input.config, lease: true };
    await taskVerb(task, 'init', { builtins });
    const expected = new Map(QUEUES.map((q) => [q, [] as string[]]));
    workload(model, 1, 150, expected);

    // Without the shared store, a worker taking a table over would not know where the other got to.
    const refused = await runTask(task, { builtins, store: new FileStateStore(mkdtempSync(join(tmpdir(), 'dstream-state-'))) }).catch((e: Error) => e);
    expect((refused as Error).message).toMatch(/lease = true: workers hand tables over through positions in dstream\.checkpoints.*state \{ store = "sqlserver"/);

    const logsA: string[] = [];
    const logsB: string[] = [];
    const stopA = new AbortController();
    const stopB = new AbortController();
    const storeA = new SqlCheckpointStore(sqlServerConnector(sql.connectionString), 'dstream.checkpoints');
    const storeB = new SqlCheckpointStore(sqlServerConnector(sql.connectionString), 'dstream.checkpoints');
    let bAcks = 0;
    const workerA = runTask(task, { builtins, store: storeA, signal: stopA.signal, onStderr: (l) => logsA.push(l) });
    await until(() => logsA.some((l) => /lease on dbo\.Customers taken/.test(l)));
    const workerB = runTask(task, {
      builtins,
      store: storeB,
      signal: stopB.signal,
      onStderr: (l) => logsB.push(l),
      onAck: (cp) => {
        bAcks++;
        const tables = (cp.data.position as { tables: Record<string, string> }).tables;
        if (Object.keys(tables).length === 3 && Object.values(tables).every((l) => l === model.currentMaxLsn)) stopB.abort();
      },
    });
    await until(() => logsB.some((l) => /standby: every table is leased by another worker/.test(l)));
    // A stops (as a worker being shut down); B takes every table over from the stored positions.
    stopA.abort();
    await workerA;
    workload(model, 151, 50, expected);
    await workerB;
    expect(logsB.filter((l) => /lease on .* taken; reading from after the stored position/.test(l))).toHaveLength(3);
    expect(bAcks).toBeGreaterThan(0);
    for (const q of QUEUES) expect(delivered(q)).toEqual(expected.get(q));
    await storeA.close();
    await storeB.close();
  });

  it('an initial snapshot reaches the queues whole (each row its own MessageId), then changes follow', async () => {
    const task = await shopTask();
    task.input.config = { ...task.input.config, start: 'latest', snapshot: true, tables: ['Persons'], create_checkpoint_table: false };
    await taskVerb(task, 'init', { builtins });
    for (let i = 1; i <= 50; i++) model.commit([{ table: 'Persons', op: 'insert', row: { Id: i, Name: `p${i}` } }]);
    const stop = new AbortController();
    const store = new FileStateStore(mkdtempSync(join(tmpdir(), 'dstream-state-')));
    let inserted = false;
    await runTask(task, {
      builtins,
      store,
      signal: stop.signal,
      onAck: (cp) => {
        const at = (cp.data.position as { tables: Record<string, string> }).tables['dbo.Persons'];
        // Once the snapshot is done (its checkpoints before that say where it stands).
        if (at === undefined) return;
        if (!inserted) {
          inserted = true;
          model.commit([{ table: 'Persons', op: 'insert', row: { Id: 51, Name: 'after' } }]);
        } else if (at === model.currentMaxLsn) stop.abort();
      },
    });
    expect(delivered('Persons_cdc_events')).toEqual([...Array.from({ length: 50 }, (_, i) => `read:${i + 1}`), 'insert:51']);
  });

  it('init with enable_cdc turns CDC on where it was off, and destroy turns off only that', async () => {
    model.createTable('dbo.Audit', [{ name: 'Id', type: 'int', nullable: false }], ['Id']);
    const task = await shopTask();
    task.input.config = { ...task.input.config, tables: ['Persons', 'Audit'], create_checkpoint_table: false };
    const refused = await taskVerb(task, 'init', { builtins }).catch((e: Error) => e);
    expect((refused as Error).message).toMatch(/CDC is not enabled on table dbo\.Audit: run EXEC sys\.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Audit'/);
    const blocked = await taskVerb(task, 'plan', { builtins });
    expect(blocked.input!.summary).toBe('init would stop: 1 problem(s) to fix first');
    expect(formatReport(blocked)).toContain(
      "Input:\n  = unchanged cdc database shop\n  = unchanged cdc table dbo.Persons\n  x blocked: cdc table dbo.Audit\n      warning: CDC is not enabled on table dbo.Audit: run EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Audit', @role_name = NULL; or set enable_cdc = true\ninit would stop: 1 problem(s) to fix first",
    );
    task.input.config = { ...task.input.config, enable_cdc: true };
    const plan = await taskVerb(task, 'plan', { builtins });
    expect(plan.input!.resources).toContainEqual(expect.objectContaining({ kind: 'cdc table', name: 'dbo.Audit', action: 'create' }));
    await taskVerb(task, 'init', { builtins });
    expect(model.instances.map((i) => i.name)).toContain('dbo_Audit');
    const destroyed = await taskVerb(task, 'destroy', { builtins });
    expect(destroyed.input!.resources).toEqual([
      { kind: 'cdc table', name: 'dbo.Persons', action: 'exists-unmanaged', warnings: ['CDC was not enabled by dstream: left as it is'] },
      { kind: 'cdc table', name: 'dbo.Audit', action: 'delete' },
    ]);
    expect(model.instances.map((i) => i.name)).not.toContain('dbo_Audit');
    expect(model.instances.map((i) => i.name)).toContain('dbo_Persons');
  }, 30_000);
  it('destroy with a source table dropped since init: every queue the task made goes, and the report says what became of the table', async () => {
    for (const t of ['dbo.Audit', 'dbo.Notes', 'dbo.Tags']) model.createTable(t, [{ name: 'Id', type: 'int', nullable: false }], ['Id']);
    const task = await shopTask();
    task.input.config = { ...task.input.config, tables: ['Audit', 'Notes', 'Tags'], create_checkpoint_table: false, enable_cdc: true };
    const made = ['Audit_cdc_events', 'Notes_cdc_events', 'Tags_cdc_events'];
    await taskVerb(task, 'init', { builtins });
    for (const q of made) expect(broker.queue(q)).toBeDefined();
    expect(model.instances.map((i) => i.name)).toEqual(expect.arrayContaining(['dbo_Audit', 'dbo_Notes', 'dbo_Tags']));

    // Notes is dropped (its capture instance goes with it); someone turns CDC off on Tags by hand.
    model.dropTable('dbo.Notes');
    model.disableInstance('dbo_Tags');
    await expect(taskVerb(task, 'plan', { builtins })).rejects.toThrow(/dbo\.Notes/);

    const status = await taskVerb(task, 'status', { builtins });
    expect(status.warnings).toEqual([expect.stringMatching(/^input mssql-cdc: discover failed: table dbo\.Notes does not exist in [^\n]*; status goes on with the tables the task file names$/)]);
    expect(status.input!.resources).toEqual(
      expect.arrayContaining([
        { kind: 'cdc table', name: 'dbo.Notes', exists: false, warnings: [expect.stringMatching(/^table dbo\.Notes does not exist in /)] },
        { kind: 'cdc table', name: 'dbo.Tags', exists: false, warnings: [expect.stringMatching(/^CDC is not enabled on table dbo\.Tags: run EXEC sys\.sp_cdc_enable_table/)] },
      ]),
    );
    expect(status.output.resources!.map((r) => `${r.name} ${String(r.exists)}`)).toEqual(made.map((q) => `${q} true`));

    const destroyed = await taskVerb(task, 'destroy', { builtins });
    for (const q of made) expect(broker.queue(q)).toBeUndefined();
    expect(destroyed.output.resources!.map((r) => `${r.action} ${r.name}`)).toEqual(made.map((q) => `delete ${q}`));
    expect(destroyed.warnings).toEqual([expect.stringMatching(/^input mssql-cdc: discover failed: table dbo\.Notes does not exist in [^\n]*; destroy goes on with the tables the task file names$/)]);
    expect(destroyed.input!.resources).toEqual([
      { kind: 'cdc table', name: 'dbo.Audit', action: 'delete' },
      { kind: 'cdc table', name: 'dbo.Notes', action: 'unchanged', exists: false, warnings: [expect.stringMatching(/^table dbo\.Notes no longer exists in .*: its capture instance was dropped with it, nothing to undo$/)] },
      { kind: 'cdc table', name: 'dbo.Tags', action: 'delete', changes: ['CDC was already off: only the mark init left is removed'] },
    ]);
    expect(model.instances.map((i) => i.name)).not.toContain('dbo_Audit');
    // Nothing of the task's marks is left: init can start over.
    expect(model.extendedProperties.filter((p) => p.class === 1)).toEqual([]);
    const text = formatReport(destroyed);
    expect(text).toContain('  = unchanged cdc table dbo.Notes\n      warning: table dbo.Notes no longer exists in ');
    expect(text).toMatch(/^Task shop: 3 streams \(Audit, Notes, Tags\)\n  warning: input mssql-cdc: discover failed/);
  }, 30_000);
});
