/**
 * mssql-cdc against a real SQL Server: SQL Server 2022 in a container (with SQL Server Agent, which
 * runs the CDC capture job) where a container runtime exists, or the server given by
 * DSTREAM_TEST_MSSQL (a connection string whose login may create a database and enable CDC; the
 * suite creates and drops its own database). Every statement of lib/sources/mssql/sql.ts runs here.
 * The full task into Service Bus also runs when the emulator can be started beside it, or a
 * namespace is given by DSTREAM_TEST_ASB. Skipped, with the reason printed, where none is available.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mssql from 'mssql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseTaskFile } from '../../lib/config/tasks.js';
import type { Envelope } from '../../lib/envelope/types.js';
import { BUILTINS } from '../../lib/providers/builtins.js';
import { runTask, taskVerb } from '../../lib/executor/executor.js';
import { SqlCheckpointStore } from '../../lib/state/sql-store.js';
import { mssqlCdc, type MssqlCdcOptions, type MssqlCdcPosition } from '../../lib/sources/mssql/reader.js';
import { sqlServerConnector } from '../../lib/sources/mssql/sqlserver.js';
import { readUntil as readStream } from '../support/streams.js';
import { containerRuntime, skipWith, startNetwork, startServiceBusEmulator, startSqlServer } from '../support/containers.js';

const QUEUES = ['Persons_cdc_events', 'Orders_cdc_events', 'Customers_cdc_events'];
let server: string | undefined; // connection string without a database
let db: string | undefined; // connection string to the test database
let asb: string | undefined;
let skipReason: string | undefined;
const database = `dstream_test_${randomUUID().slice(0, 8)}`;
const cleanups: Array<() => Promise<unknown>> = [];

async function exec(connectionString: string, ...statements: string[]): Promise<void> {
  const pool = await new mssql.ConnectionPool(connectionString).connect();
  try {
    for (const s of statements) await pool.request().batch(s);
  } finally {
    await pool.close();
  }
}

beforeAll(async () => {
  server = process.env.DSTREAM_TEST_MSSQL || undefined;
  if (server === undefined) {
    const runtime = await containerRuntime();
    if (!runtime.ok) {
      skipReason = `${runtime.reason}; set DSTREAM_TEST_MSSQL to a connection string to run these against a SQL Server`;
      return;
    }
    const network = await startNetwork(cleanups);
    server = await startSqlServer(cleanups, network, { agent: true });
    if (!process.env.DSTREAM_TEST_ASB) asb = await startServiceBusEmulator(cleanups, network, QUEUES).catch(() => undefined);
  }
  asb ??= process.env.DSTREAM_TEST_ASB || undefined;
  await exec(server, `CREATE DATABASE [${database}]`);
  cleanups.unshift(() => exec(server!, `ALTER DATABASE [${database}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE`, `DROP DATABASE [${database}]`));
  db = `${server.replace(/;?\s*(Database|Initial Catalog)=[^;]*/gi, '')};Database=${database}`;
  await exec(
    db,
    'CREATE SCHEMA sales',
    'CREATE TABLE dbo.Persons (Id int NOT NULL PRIMARY KEY, Name nvarchar(100) NULL, Email nvarchar(200) NULL)',
    'CREATE TABLE sales.Orders (OrderId bigint NOT NULL PRIMARY KEY, CustomerId int NULL, Total decimal(19,4) NULL)',
    'CREATE TABLE dbo.Customers (CustomerId int NOT NULL PRIMARY KEY, Company nvarchar(100) NULL)',
  );
}, 600_000);

afterAll(async () => {
  for (const c of cleanups) await c().catch((err: Error) => process.stderr.write(`cleanup: ${err.message}\n`));
}, 120_000);

const TABLES = ['Persons', 'sales.Orders', 'Customers'];
const FAST: Partial<MssqlCdcOptions> = { pollIntervalMs: 200, maxPollIntervalMs: 1000, retryDelayMs: 200 };

function readUntil(options: Partial<MssqlCdcOptions>, done: (seen: Envelope[]) => boolean, ms = 90_000): Promise<Envelope[]> {
  return readStream<Envelope>(mssqlCdc({ connectionString: db!, tables: TABLES, start: 'earliest', ...FAST, ...options }), done, ms);
}
const rowsOf = (es: Envelope[]) => es.filter((e) => e.type === 'cdc');
const rows = (n: number) => (es: Envelope[]) => rowsOf(es).length >= n && es.at(-1)!.type === 'checkpoint';

function task(output: string, extra = '') {
  return parseTaskFile(
    `task "shop" {
  input {
    provider = "mssql-cdc"
    config {
      connection_string = "${db!.replace(/"/g, '\\"')}"
      tables = ["Persons", "sales.Orders", "Customers"]
      start = "earliest"
      enable_cdc = true
      create_checkpoint_table = true
      poll_interval_ms = 200
      ${extra}
    }
  }
  output {
    ${output}
  }
}
`,
    'shop.hcl',
  ).then((f) => f.tasks[0]!);
}

describe('mssql-cdc against SQL Server', () => {
  it('init enables CDC; changes come back in commit order; a restart resumes; status and destroy', async (ctx) => {
    if (db === undefined) skipWith(ctx, skipReason ?? 'no SQL Server available');
    const t = await task(`provider = "files"\n    config { dir = "${mkdtempSync(join(tmpdir(), 'dstream-mssql-'))}" }`);
    const plan = await taskVerb(t, 'plan', { builtins: BUILTINS });
    expect(plan.input!.resources!.filter((r) => r.action === 'create').map((r) => r.name)).toEqual([database, 'dbo.Persons', 'sales.Orders', 'dbo.Customers', 'dstream.checkpoints']);
    await taskVerb(t, 'init', { builtins: BUILTINS });
    const again = await taskVerb(t, 'plan', { builtins: BUILTINS });
    expect(again.input!.resources!.every((r) => r.action === 'unchanged')).toBe(true);

    await exec(
      db!,
      `BEGIN TRAN; INSERT dbo.Persons VALUES (1, N'Ada', N'ada@example.com'); INSERT sales.Orders VALUES (10, 1, 12.5000); COMMIT`,
      `INSERT dbo.Customers VALUES (1, N'Analytical Engines')`,
      `BEGIN TRAN; UPDATE dbo.Persons SET Name = N'Ada Lovelace' WHERE Id = 1; DELETE sales.Orders WHERE OrderId = 10; COMMIT`,
    );
    const first = await readUntil({}, rows(5));
    expect(rowsOf(first).map((r) => `${r.metadata!.Schema}.${r.metadata!.TableName}:${r.metadata!.OperationType}`)).toEqual([
      'dbo.Persons:Insert',
      'sales.Orders:Insert',
      'dbo.Customers:Insert',
      'dbo.Persons:Update',
      'sales.Orders:Delete',
    ]);
    expect(rowsOf(first)[1]!.data).toEqual({ OrderId: '10', CustomerId: 1, Total: '12.5000' });
    expect(rowsOf(first)[0]!.metadata).toMatchObject({ Database: database, OperationID: 2, CaptureInstance: 'dbo_Persons', LSN: expect.stringMatching(/^0x[0-9A-F]{20}$/) });
    expect(rowsOf(first)[0]!.metadata!.LSN).toBe(rowsOf(first)[1]!.metadata!.LSN); // one transaction
    const position = first.filter((e) => e.type === 'checkpoint').at(-1)!.data as { position: MssqlCdcPosition };

    await exec(db!, `INSERT dbo.Persons VALUES (2, N'Grace', NULL)`);
    const second = await readUntil({ after: position.position }, rows(1));
    expect(rowsOf(second).map((r) => (r.data as { Id: number }).Id)).toEqual([2]);

    const status = await taskVerb(t, 'status', { builtins: BUILTINS, position: (second.filter((e) => e.type === 'checkpoint').at(-1)!.data as { position: unknown }).position });
    expect(status.input!.resources).toContainEqual(expect.objectContaining({ kind: 'cdc table', name: 'dbo.Persons', instance: 'dbo_Persons', lagSeconds: expect.any(Number) }));

    const snapshot = await readUntil({ snapshot: true, start: 'latest', tables: ['Persons'] }, rows(2));
    expect(rowsOf(snapshot).map((r) => [r.metadata!.OperationType, (r.data as { Id: number }).Id])).toEqual([
      ['Read', 1],
      ['Read', 2],
    ]);
    // In chunks of one row (keyset pagination on the primary key): a checkpoint after each, and a restart from the first resumes after its key.
    const chunked = await readUntil({ snapshot: true, start: 'latest', tables: ['Persons'], snapshotChunkRows: 1 }, rows(2));
    const positions = chunked.filter((e) => e.type === 'checkpoint').map((e) => (e.data as { position: MssqlCdcPosition }).position);
    const mid = positions.find((p) => p.snapshots?.['dbo.Persons']?.rows === 1)!;
    expect(mid.snapshots?.['dbo.Persons']).toMatchObject({ rows: 1, key: [1] });
    const resumed = await readUntil({ after: mid, tables: ['Persons'] }, rows(1));
    expect(rowsOf(resumed).map((r) => [r.metadata!.OperationType, (r.data as { Id: number }).Id])).toEqual([['Read', 2]]);

    const discovered = await taskVerb(t, 'discover', { builtins: BUILTINS });
    expect(discovered.streams[1]).toMatchObject({ name: 'Orders', schema: 'sales', keys: ['OrderId'] });
  }, 300_000);

  it('maps every SQL type class to JSON without losing meaning', async (ctx) => {
    if (db === undefined) skipWith(ctx, skipReason ?? 'no SQL Server available');
    await exec(
      db!,
      `CREATE TABLE dbo.Types (Id int NOT NULL PRIMARY KEY, t_tinyint tinyint, t_smallint smallint, t_bigint bigint, t_real real, t_float float,
        t_decimal decimal(38,10), t_money money, t_smallmoney smallmoney, t_bit bit, t_char char(3), t_nvarchar nvarchar(20), t_xml xml,
        t_guid uniqueidentifier, t_date date, t_datetime datetime, t_datetime2 datetime2(7), t_smalldatetime smalldatetime,
        t_dto datetimeoffset(7), t_time time(7), t_binary binary(4), t_varbinary varbinary(10), t_rowversion rowversion,
        t_geo geography, t_hier hierarchyid, t_variant sql_variant, t_null int)`,
      `EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Types', @role_name = NULL`,
      `INSERT dbo.Types (Id, t_tinyint, t_smallint, t_bigint, t_real, t_float, t_decimal, t_money, t_smallmoney, t_bit, t_char, t_nvarchar, t_xml,
        t_guid, t_date, t_datetime, t_datetime2, t_smalldatetime, t_dto, t_time, t_binary, t_varbinary, t_geo, t_hier, t_variant, t_null)
       VALUES (1, 255, -32768, 9223372036854775807, 1.5, 2.25, 1234567890123456789012345678.0123456789, 922337203685477.5807, 214748.3647, 1, 'abc', N'Zoë', N'<a>1</a>',
        '6F9619FF-8B86-D011-B42D-00C04FC964FF', '2026-11-26', '2026-11-26T09:01:02.003', '2026-11-26T09:01:02.1234567', '2026-11-26T09:01:00',
        '2026-11-26T09:01:02.1234567+13:00', '09:01:02.1234567', 0xDEADBEEF, 0x0102, geography::Point(47.65, -122.34, 4326), hierarchyid::Parse('/1/2/'),
        CAST(42 AS int), NULL)`,
    );
    const [row] = rowsOf(await readUntil({ tables: ['Types'] }, rows(1)));
    expect(row!.data).toEqual({
      Id: 1,
      t_tinyint: 255,
      t_smallint: -32768,
      t_bigint: '9223372036854775807',
      t_real: 1.5,
      t_float: 2.25,
      t_decimal: '1234567890123456789012345678.0123456789',
      t_money: '922337203685477.5807',
      t_smallmoney: '214748.3647',
      t_bit: true,
      t_char: 'abc',
      t_nvarchar: 'Zoë',
      t_xml: '<a>1</a>',
      t_guid: '6F9619FF-8B86-D011-B42D-00C04FC964FF',
      t_date: '2026-11-26',
      t_datetime: '2026-11-26T09:01:02.003',
      t_datetime2: '2026-11-26T09:01:02.1234567',
      t_smalldatetime: '2026-11-26T09:01:00',
      t_dto: '2026-11-26T09:01:02.1234567+13:00',
      t_time: '09:01:02.1234567',
      t_binary: '3q2+7w==',
      t_varbinary: 'AQI=',
      t_rowversion: expect.stringMatching(/^[A-Za-z0-9+/]{11}=$/),
      t_geo: 'POINT (-122.34 47.65)',
      t_hier: '/1/2/',
      t_variant: '42',
      t_null: null,
    });
  }, 300_000);

  it('keeps positions in the checkpoint table and hands tables over between leased workers', async (ctx) => {
    if (db === undefined) skipWith(ctx, skipReason ?? 'no SQL Server available');
    const store = new SqlCheckpointStore(sqlServerConnector(db!), 'dstream.checkpoints');
    await exec(db!, `IF OBJECT_ID(N'dstream.checkpoints') IS NULL THROW 50000, N'init should have created dstream.checkpoints', 1`);
    const lease = { task: 'leased', checkpointTable: { schema: 'dstream', table: 'checkpoints' }, checkEveryMs: 200 };
    await exec(db!, `INSERT dbo.Persons VALUES (100, N'leased', NULL)`);
    const a = await readUntil({ lease, tables: ['Persons'] }, (s) => rowsOf(s).some((r) => (r.data as { Id: number }).Id === 100) && s.at(-1)!.type === 'checkpoint');
    await store.save('leased', (a.filter((e) => e.type === 'checkpoint').at(-1)!.data as { position: unknown }).position, 'mssql-cdc');
    await exec(db!, `INSERT dbo.Persons VALUES (101, N'after handover', NULL)`);
    // Worker A is gone (its session and lock with it); B takes the table from the stored position.
    const b = await readUntil({ lease, tables: ['Persons'] }, rows(1));
    expect(rowsOf(b).map((r) => (r.data as { Id: number }).Id)).toEqual([101]);
    expect((await store.load('leased'))?.position).toMatchObject({ tables: { 'dbo.Persons': expect.stringMatching(/^0x/) } });
    expect(await store.reset('leased')).toBe(true);
    await store.close();
  }, 300_000);

  it('runs the whole task into Service Bus (emulator or DSTREAM_TEST_ASB), then destroys only what init made', async (ctx) => {
    if (db === undefined) skipWith(ctx, skipReason ?? 'no SQL Server available');
    if (asb === undefined) skipWith(ctx, 'no Service Bus emulator or DSTREAM_TEST_ASB');
    const t = await task(`provider = "asb-sink"\n    config {\n      connection_string = "${asb}"\n      quiet = true\n    }`);
    const store = new SqlCheckpointStore(sqlServerConnector(db!), 'dstream.checkpoints');
    await exec(db!, `INSERT dbo.Customers VALUES (2, N'Difference Engines')`);
    const stop = new AbortController();
    const summary = await runTask(t, { builtins: BUILTINS, store, signal: stop.signal, onAck: (_cp, n) => n >= 1 && stop.abort() });
    expect(summary.rows).toBeGreaterThanOrEqual(1);
    expect((await store.load('shop'))?.position).toMatchObject({ tables: expect.objectContaining({ 'dbo.Customers': expect.stringMatching(/^0x/) }) });
    await store.close();
  }, 300_000);

  it('destroy disables CDC where init enabled it and drops the checkpoint table init created', async (ctx) => {
    if (db === undefined) skipWith(ctx, skipReason ?? 'no SQL Server available');
    const t = await task(`provider = "files"\n    config { dir = "${mkdtempSync(join(tmpdir(), 'dstream-mssql-'))}" }`);
    await exec(db!, `IF OBJECT_ID(N'dstream.checkpoints') IS NOT NULL DELETE FROM dstream.checkpoints`);
    const destroyed = await taskVerb(t, 'destroy', { builtins: BUILTINS });
    expect(destroyed.input!.resources).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ kind: 'cdc table', name: 'dbo.Persons', action: 'delete' }),
        expect.objectContaining({ kind: 'checkpoint table', name: 'dstream.checkpoints', action: 'delete' }),
      ]),
    );
    // dbo.Types was enabled outside dstream: CDC stays on for it, and so on the database.
    expect(destroyed.input!.resources).toContainEqual(expect.objectContaining({ kind: 'cdc database', action: 'exists-unmanaged' }));
  }, 300_000);
});
