import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, ExitCodes } from '../../lib/index.js';
import { runProvider } from '../../lib/provider/run-provider.js';
import { mssqlCdcProvider } from '../../lib/providers/mssql-cdc.js';
import { storedState, writeStateFile } from '../../lib/state/state-file.js';
import { ROOT, ndjson, spawnNode } from '../support/process.js';
import { text } from '../support/streams.js';
import { shopModel, type CdcModel } from '../support/cdc-model.js';
import { SQL_PASSWORD, sqlServerForTest, type TestSqlServer } from '../support/sql-server.js';

const BIN = join(ROOT, 'dist/bin/mssql-cdc.js');
const SECRET = 'Pa55word-never-shown';
const UNREACHABLE = `Server=127.0.0.1,1;Database=shop;User Id=dstream;Password=${SECRET};Encrypt=false`;

const servers = new WeakMap<CdcModel, TestSqlServer>();
async function serve(m = shopModel()): Promise<CdcModel> {
  servers.set(m, await sqlServerForTest(m));
  return m;
}

/**
 * Runs the provider in-process, standalone (argv) until `stopWhen` holds for stdout; it reaches the
 * model's TDS server with the connection string from MSSQL_CONNECTION_STRING, as a user gives it.
 */
async function standalone(m: CdcModel, argv: string[], stopWhen: (lines: Array<Record<string, unknown>>) => boolean) {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const stderr = text();
  const signals = new PassThrough() as unknown as NodeJS.EventEmitter;
  const lines: Array<Record<string, unknown>> = [];
  let buffered = '';
  stdout.setEncoding('utf8').on('data', (d: string) => {
    buffered += d;
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      lines.push(JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>);
      buffered = buffered.slice(nl + 1);
      if (stopWhen(lines)) signals.emit('SIGTERM', 'SIGTERM');
    }
  });
  const code = await runProvider(mssqlCdcProvider(), { argv, stdin, stdout, stderr, env: { MSSQL_CONNECTION_STRING: servers.get(m)!.connectionString }, signals });
  return { code, lines, stderr: stderr.text() };
}

describe('mssql-cdc provider', () => {
  it('in a pipe, resumes after the checkpoint in the state file asb-sink writes, and in one of its earlier format', async () => {
    const m = await serve();
    for (let i = 1; i <= 4; i++) m.commit([{ table: 'Persons', op: 'insert', row: { Id: i, Name: `p${i}` } }]);
    const args = ['--tables', 'Persons', '--start', 'earliest', '--poll-interval-ms', '5', '--progress-ms', '0'];
    const first = await standalone(m, args, (l) => l.filter((x) => x.type === 'cdc').length >= 4 && l.at(-1)!.type === 'checkpoint');
    expect(first.code).toBe(ExitCodes.TERMINATED);
    const cp = first.lines.at(-1)!;
    const dir = mkdtempSync(join(tmpdir(), 'dstream-mssql-'));
    const stateFile = join(dir, 'state.json');
    await writeStateFile(stateFile, storedState((cp.data as { position: unknown }).position, { source: cp.source as string }));
    expect(JSON.parse(readFileSync(stateFile, 'utf8'))).toMatchObject({ position: (cp.data as { position: unknown }).position, source: 'mssql-cdc' });
    m.commit([{ table: 'Persons', op: 'insert', row: { Id: 5, Name: 'p5' } }]);
    const second = await standalone(m, [...args, '--state-file', stateFile], (l) => l.some((x) => x.type === 'cdc') && l.at(-1)!.type === 'checkpoint');
    expect(second.lines.filter((x) => x.type === 'cdc').map((x) => (x.data as { Id: number }).Id)).toEqual([5]);
    expect(second.stderr).toContain('mssql-cdc: reading Persons after the stored position');
    // asb-sink's earlier format, {"checkpoint": <envelope>}, is read the same.
    writeFileSync(stateFile, `${JSON.stringify({ checkpoint: second.lines.at(-1)!, savedAt: new Date().toISOString() })}\n`);
    m.commit([{ table: 'Persons', op: 'insert', row: { Id: 6, Name: 'p6' } }]);
    const third = await standalone(m, [...args, '--state-file', stateFile], (l) => l.some((x) => x.type === 'cdc') && l.at(-1)!.type === 'checkpoint');
    expect(third.lines.filter((x) => x.type === 'cdc').map((x) => (x.data as { Id: number }).Id)).toEqual([6]);
    // A state file of something else is refused with what to do.
    writeFileSync(stateFile, '{"checkpoint":{"data":{"position":{"tx":1}}}}\n');
    const bad = await standalone(m, [...args, '--state-file', stateFile], () => true);
    expect(bad.code).toBe(ExitCodes.FAILURE);
    expect(bad.stderr).toMatch(/state\.json holds no mssql-cdc position .*remove it to start at earliest/);
  });

  it('standalone destroy lists what it removes and asks for --yes', async () => {
    const m = await serve();
    const r = await standalone(m, ['destroy', '--tables', 'Persons'], () => false);
    expect(r.code).toBe(ExitCodes.USAGE);
    expect(r.stderr).toContain('mssql-cdc: destroy removes:\n  - cdc table dbo.Persons\n');
    expect(r.stderr).toContain('  - CDC on the tables where init enabled it (their change data goes with it), and the checkpoint table init created\n');
    expect(r.stderr).toMatch(/destroy: not confirmed, nothing removed; pass --yes/);
    const ok = await standalone(m, ['destroy', '--tables', 'Persons', '--yes', '--task', 'shop'], () => false);
    expect(ok.code).toBe(ExitCodes.OK);
    expect(ok.lines[0]).toMatchObject({ status: 'ok', command: 'destroy', resources: [{ kind: 'cdc table', name: 'dbo.Persons', action: 'exists-unmanaged' }] });
  });

  it('status reports per table the instance, min/max LSN, the stored position, lag and retention trouble', async () => {
    const m = await serve();
    const first = m.commit([{ table: 'Persons', op: 'insert', row: { Id: 1 } }]);
    for (let i = 2; i <= 6; i++) m.commit([{ table: 'Persons', op: 'insert', row: { Id: i } }]);
    m.cleanup(m.commit([{ table: 'Customers', op: 'insert', row: { CustomerId: 1 } }]));
    m.agent = 'stopped';
    const dir = mkdtempSync(join(tmpdir(), 'dstream-mssql-'));
    const stateFile = join(dir, 'state.json');
    writeFileSync(stateFile, JSON.stringify({ position: { lsn: first, tables: { 'dbo.Persons': first } } }));
    const r = await standalone(m, ['status', '--tables', 'Persons,Customers', '--state-file', stateFile], () => false);
    expect(r.code).toBe(ExitCodes.OK);
    const [persons, customers, agent] = (r.lines[0] as { resources: Array<Record<string, unknown>> }).resources;
    // Cleanup pruned cdc.lsn_time_mapping below its watermark too: the position's commit time and
    // the commits in between are gone from it.
    expect(persons).toMatchObject({ kind: 'cdc table', name: 'dbo.Persons', instance: 'dbo_Persons', position: first, maxLsn: m.currentMaxLsn, lagSeconds: null, pendingTransactions: 1 });
    expect((persons!.warnings as string[])[0]).toMatch(/behind retention: .*DSTREAM_ERR_CDC_GAP unless on_gap is snapshot or skip/);
    expect(customers).toMatchObject({ name: 'dbo.Customers', position: null });
    expect(agent).toMatchObject({ kind: 'sql server agent', state: 'stopped', warnings: [expect.stringMatching(/SQL Server Agent is not running/)] });
  });

  it('discover reports tables with columns and primary keys', async () => {
    const m = await serve();
    const r = await standalone(m, ['discover', '--tables', 'Persons,sales.Orders'], () => false);
    expect(r.lines[0]).toMatchObject({
      status: 'ok',
      command: 'discover',
      streams: [
        { name: 'Persons', schema: 'dbo', database: 'shop', keys: ['Id'], columns: [{ name: 'Id', type: 'int', nullable: false }, { name: 'Name', type: 'nvarchar', nullable: true }, { name: 'Email', type: 'nvarchar', nullable: true }] },
        { name: 'Orders', schema: 'sales', keys: ['OrderId'] },
      ],
    });
  });

  it('the executable streams changes from the server named by MSSQL_CONNECTION_STRING and stops on SIGTERM', async () => {
    const m = await serve();
    for (let i = 1; i <= 3; i++) m.commit([{ table: 'Persons', op: 'insert', row: { Id: i, Name: `p${i}` } }]);
    const env = { MSSQL_CONNECTION_STRING: servers.get(m)!.connectionString };
    const r = await spawnNode(BIN, ['--tables', 'Persons', '--start', 'earliest', '--poll-interval-ms', '5', '--progress-ms', '0'], {
      env,
      keepStdinOpen: true,
      timeoutMs: 20_000,
      onSpawn: (child) => {
        let out = '';
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          const lines = out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type?: string });
          if (lines.filter((l) => l.type === 'cdc').length >= 3 && lines.at(-1)!.type === 'checkpoint') child.kill('SIGTERM');
        });
      },
    });
    expect(r.code).toBe(ExitCodes.TERMINATED);
    const rows = (r.lines() as Array<{ type: string; data: { Id: number } }>).filter((l) => l.type === 'cdc');
    expect(rows.map((l) => l.data.Id)).toEqual([1, 2, 3]);
    expect(r.stdout + r.stderr).not.toContain(SQL_PASSWORD);
  });

  it('the executable in provider mode: init creates the checkpoint table (schema first), plan then shows it unchanged', async () => {
    const m = await serve();
    const config = { connection_string: servers.get(m)!.connectionString, tables: ['Persons'], create_checkpoint_table: true, task: 'shop' };
    const init = await spawnNode(BIN, [], { input: ndjson({ command: 'init', config, protocol: 1 }), timeoutMs: 20_000 });
    expect(init.lines()).toEqual([{ status: 'ready', protocol: 1 }, expect.objectContaining({ status: 'ok', command: 'init' })]);
    expect(init.code).toBe(ExitCodes.OK);
    expect(m.hasTable('dstream.checkpoints')).toBe(true);
    const plan = await spawnNode(BIN, [], { input: ndjson({ command: 'plan', config, protocol: 1 }), timeoutMs: 20_000 });
    expect((plan.lines()[1] as { resources: unknown[] }).resources).toContainEqual({ kind: 'checkpoint table', name: 'dstream.checkpoints', action: 'unchanged' });
  });

  it('the executable: gives up on an unreachable server after its attempts, naming host:port, never the password', async () => {
    const r = await spawnNode(BIN, ['--tables', 'Persons', '--connect-attempts', '2', '--retry-delay-ms', '50', '--progress-ms', '0'], { input: '', env: { MSSQL_CONNECTION_STRING: UNREACHABLE } });
    expect(r.code).toBe(ExitCodes.FAILURE);
    expect(r.stderr).toMatch(/mssql-cdc: connecting \(attempt 1 of 2\) failed: could not connect to SQL Server at 127\.0\.0\.1:1\/shop/);
    expect(r.stderr).toMatch(/gave up after 2 attempts/);
    expect(r.stdout).toBe('');
    expect(r.stdout + r.stderr).not.toContain(SECRET);
  });

  it('the executable in provider mode answers a lifecycle verb with an error line and code', async () => {
    const r = await spawnNode(BIN, [], { input: ndjson({ command: 'status', config: { connection_string: UNREACHABLE, tables: ['Persons'] }, protocol: 1 }) });
    expect(r.code).toBe(ExitCodes.FAILURE);
    expect(r.lines()).toEqual([
      { status: 'ready', protocol: 1 },
      expect.objectContaining({ status: 'error', command: 'status', code: ErrorCodes.SQL_CONNECT, message: expect.stringContaining('127.0.0.1:1/shop') }),
    ]);
    expect(r.stdout + r.stderr).not.toContain(SECRET);
    const usage = await spawnNode(BIN, ['--standalone'], { input: '', env: { MSSQL_CONNECTION_STRING: '' } });
    expect(usage.code).toBe(ExitCodes.USAGE);
    expect(usage.stderr).toMatch(/tables/);
  });
});
