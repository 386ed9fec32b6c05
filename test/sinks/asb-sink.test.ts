import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCodes, ExitCodes } from '../../lib/index.js';
import { TestBroker } from '../support/asb-broker.js';
import { ndjson, ROOT, spawnNode } from '../support/process.js';

const BIN = join(ROOT, 'dist/bin/asb-sink.js');
const row = (TableName: string, n: number) => ({
  source: 'mssql-cdc',
  type: 'cdc',
  data: { Id: n },
  metadata: { TableName, OperationType: 'Insert', LSN: `0x${n.toString(16).padStart(20, '0')}`, Seq: '0x01' },
});
const cp = (n: number) => ({ source: 'mssql-cdc', type: 'checkpoint', data: { position: { lsn: n } }, metadata: {} });

let broker: TestBroker;
beforeEach(async () => {
  broker = await TestBroker.start();
  broker.createQueue('Persons_cdc_events');
  broker.createQueue('Orders_cdc_events');
});
afterEach(async () => {
  await broker.close();
  expect(broker.errors).toEqual([]);
});

describe('asb-sink (spawned)', () => {
  it('provider mode: delivers, acknowledges each checkpoint on stdout after its rows, summarises on stderr', async () => {
    const input = ndjson(
      { command: 'run', config: { connection_string: broker.connectionString, progress_ms: 0 }, protocol: 1 },
      row('Persons', 1),
      row('Orders', 2),
      cp(1),
      row('Persons', 3),
      cp(2),
    );
    const r = await spawnNode(BIN, [], { input });
    expect(r.code).toBe(0);
    expect(r.lines()).toEqual([{ status: 'ready', protocol: 1 }, cp(1), cp(2)]);
    expect(broker.bodies('Persons_cdc_events')).toEqual([row('Persons', 1), row('Persons', 3)]);
    expect(broker.bodies('Orders_cdc_events')).toEqual([row('Orders', 2)]);
    expect(r.stderr).toMatch(/^asb-sink: delivered 3 messages in \d+ batches \(.+\) to 2 queues in [\d.]+ s; 2 checkpoints acknowledged: /m);
    expect(r.stdout + r.stderr).not.toContain('SharedAccessKey');
  });

  it('standalone mode: connection string from the environment, no stdout, last checkpoint in the state file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-asb-'));
    const state = join(dir, 'state.json');
    const r = await spawnNode(BIN, ['--state-file', state, '--quiet'], {
      input: ndjson(row('Persons', 1), cp(1), row('Orders', 2), cp(2)),
      env: { ASB_CONNECTION_STRING: broker.connectionString },
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('');
    expect(JSON.parse(readFileSync(state, 'utf8'))).toEqual({ position: cp(2).data.position, source: 'mssql-cdc', savedAt: expect.any(String) });
    expect(broker.bodies('Orders_cdc_events')).toEqual([row('Orders', 2)]);
  });

  it('--state-file: the last of many quick acknowledgements is stored; temp files of killed saves are removed on start', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-asb-'));
    const state = join(dir, 'state.json');
    const stale = join(dir, '.state.json.2147483600.tmp');
    const live = join(dir, `.state.json.${process.pid}.tmp`);
    writeFileSync(stale, '{"checkpoint":');
    writeFileSync(live, 'someone saving right now');
    const lines: unknown[] = [];
    for (let i = 1; i <= 2000; i++) lines.push(row('Persons', i), cp(i));
    const r = await spawnNode(BIN, ['--state-file', state, '--quiet'], { input: ndjson(...lines), env: { ASB_CONNECTION_STRING: broker.connectionString }, timeoutMs: 25_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(readFileSync(state, 'utf8'))).toEqual({ position: cp(2000).data.position, source: 'mssql-cdc', savedAt: expect.any(String) });
    expect(broker.queue('Persons_cdc_events')!.messages).toHaveLength(2000);
    expect(existsSync(stale)).toBe(false);
    expect(existsSync(live)).toBe(true); // a running process's temp file is left alone
  }, 30_000);

  it('--state-file with skip_acknowledged: started again on a replay of the same stream, sends only what the stored checkpoint does not cover', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-asb-'));
    const state = join(dir, 'state.json');
    const env = { ASB_CONNECTION_STRING: broker.connectionString };
    const first = [row('Persons', 1), row('Orders', 2), cp(1), row('Persons', 3), cp(2)];
    expect((await spawnNode(BIN, ['--state-file', state, '--quiet'], { input: ndjson(...first), env })).code).toBe(0);
    // The same stream again, longer: only what follows cp(2) is new.
    const replay = await spawnNode(BIN, ['--state-file', state, '--skip-acknowledged'], { input: ndjson(...first, row('Orders', 4), cp(3)), env });
    expect(replay.code, replay.stderr).toBe(0);
    expect(replay.stderr).toContain(`skipped 3 rows up to the checkpoint stored in ${state}`);
    expect(broker.bodies('Persons_cdc_events')).toEqual([row('Persons', 1), row('Persons', 3)]);
    expect(broker.bodies('Orders_cdc_events')).toEqual([row('Orders', 2), row('Orders', 4)]);
    expect(JSON.parse(readFileSync(state, 'utf8'))).toEqual({ position: cp(3).data.position, source: 'mssql-cdc', savedAt: expect.any(String) });
    // Another stream (the stored checkpoint never comes): an error, and nothing sent.
    const other = await spawnNode(BIN, ['--state-file', state, '--skip-acknowledged', '--quiet'], { input: ndjson(row('Orders', 9), cp(9)), env });
    expect(other.code).toBe(ExitCodes.USAGE);
    expect(other.stderr).toContain('the input ended without the checkpoint stored in');
    expect(broker.bodies('Orders_cdc_events')).toHaveLength(2);
  });

  it('--state-file in the earlier format ({"checkpoint": <envelope>}) is read: skip_acknowledged resumes after it, and the file is written in the one format', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-asb-'));
    const state = join(dir, 'state.json');
    writeFileSync(state, `${JSON.stringify({ checkpoint: cp(1), savedAt: '2026-01-01T00:00:00.000Z' })}\n`);
    const r = await spawnNode(BIN, ['--state-file', state, '--skip-acknowledged'], {
      input: ndjson(row('Persons', 1), cp(1), row('Persons', 2), cp(2)),
      env: { ASB_CONNECTION_STRING: broker.connectionString },
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`skipped 1 rows up to the checkpoint stored in ${state}`);
    expect(broker.bodies('Persons_cdc_events')).toEqual([row('Persons', 2)]);
    expect(JSON.parse(readFileSync(state, 'utf8'))).toEqual({ position: cp(2).data.position, source: 'mssql-cdc', savedAt: expect.any(String) });
  });

  it('a --state-file that is not a state file is refused, naming it and what to do', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-asb-'));
    const state = join(dir, 'state.json');
    writeFileSync(state, '{"checkpoint":{"type":"checkpoint"}}\n');
    const r = await spawnNode(BIN, ['--state-file', state, '--quiet'], { input: ndjson(row('Persons', 1), cp(1)), env: { ASB_CONNECTION_STRING: broker.connectionString } });
    expect(r.code).toBe(ExitCodes.FAILURE);
    expect(r.stderr).toContain(`${state} is not a dstream state file (no "position"); fix it or remove it`);
    expect(broker.bodies('Persons_cdc_events')).toEqual([]);
  });

  it('a failed state write reports its own error, not the cleanup\'s', async (ctx) => {
    const ro = mkdtempSync(join(tmpdir(), 'dstream-ro-'));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', ro], { stdio: 'pipe' });
    } catch (err) {
      return ctx.skip(`cannot mount a read-only tmpfs here (${(err as Error).message.split('\n')[0]})`);
    }
    try {
      const r = await spawnNode(BIN, ['--state-file', join(ro, 's.json'), '--quiet'], { input: ndjson(row('Persons', 1), cp(1)), env: { ASB_CONNECTION_STRING: broker.connectionString } });
      expect(r.code).toBe(ExitCodes.FAILURE);
      expect(r.stderr).toMatch(new RegExp(`could not write ${join(ro, 's.json')}: EROFS: read-only file system, open '${join(ro, '.s.json.')}\\d+\\.tmp'`));
    } finally {
      execFileSync('umount', [ro]);
    }
  });

  it('a missing queue fails the run, naming the queue and what to do, without the secret', async () => {
    const r = await spawnNode(BIN, [], {
      input: ndjson({ command: 'run', config: { connection_string: broker.connectionString, max_retries: 0 } }, row('Ghosts', 1), cp(1)),
    });
    expect(r.code).toBe(ExitCodes.FAILURE);
    const lines = r.lines();
    expect(lines[0]).toEqual({ status: 'ready', protocol: 1 });
    expect(lines).toHaveLength(2); // no acknowledgement: nothing was delivered
    expect(lines[1]).toMatchObject({ status: 'error', command: 'run', code: ErrorCodes.QUEUE_NOT_FOUND });
    expect(r.stderr).toContain('queue "Ghosts_cdc_events" in 127.0.0.1:');
    expect(r.stderr).toContain('dstream init <task>');
    expect(r.stdout + r.stderr).not.toContain('SharedAccessKey=v');
  });

  it('creates a missing queue with the task settings when on_missing_queue = create, then delivers', async () => {
    const r = await spawnNode(BIN, [], {
      input: ndjson(
        { command: 'run', config: { connection_string: broker.connectionString, on_missing_queue: 'create', task: 'demo', queue_max_delivery_count: 3, quiet: true } },
        row('Customers', 1),
        cp(1),
      ),
    });
    expect(r.stderr).toMatch(/^asb-sink: queue Customers_cdc_events did not exist: created it in 127\.0\.0\.1:\d+$/m);
    expect(r.code).toBe(0);
    expect(r.lines()).toEqual([{ status: 'ready', protocol: 1 }, cp(1)]);
    expect(broker.bodies('Customers_cdc_events')).toEqual([row('Customers', 1)]);
    const q = broker.queue('Customers_cdc_events')!;
    expect(q.requiresDuplicateDetection).toBe(true);
    expect(q.description).toMatchObject({ MaxDeliveryCount: '3', UserMetadata: '{"managed-by":"dstream","task":"demo"}' });
  });

  it('standalone destroy lists the queues it removes and removes nothing without --yes', async () => {
    const env = { ASB_CONNECTION_STRING: broker.connectionString };
    const args = ['--task', 'demo', '--tables', 'Invoices'];
    const init = await spawnNode(BIN, ['init', ...args], { env, timeoutMs: 60_000 });
    expect(init.code, init.stderr).toBe(0);
    expect(broker.queue('Invoices_cdc_events')).toBeDefined();
    const refused = await spawnNode(BIN, ['destroy', ...args], { env, timeoutMs: 60_000 });
    expect(refused.code).toBe(ExitCodes.USAGE);
    expect(refused.stderr).toContain('asb-sink: destroy removes:\n  - queue Invoices_cdc_events\n');
    expect(refused.stderr).toContain('destroy: not confirmed, nothing removed; pass --yes');
    expect(refused.lines()).toEqual([expect.objectContaining({ status: 'error', command: 'destroy', code: ErrorCodes.INVALID_OPTION })]);
    expect(broker.queue('Invoices_cdc_events')).toBeDefined();
    const done = await spawnNode(BIN, ['destroy', ...args, '--yes'], { env, timeoutMs: 60_000 });
    expect(done.code, done.stderr).toBe(0);
    expect(broker.queue('Invoices_cdc_events')).toBeUndefined();
    expect(refused.stderr + done.stderr + done.stdout).not.toContain('SharedAccessKey');
  }, 120_000);

  it('a malformed connection string is a usage error (exit 2) that never shows the string', async () => {
    for (const cs of ['SharedAccessKey=s3cr3t-key;garbage', 'Endpoint=http://x/;SharedAccessKeyName=k;SharedAccessKey=s3cr3t-key']) {
      const r = await spawnNode(BIN, ['--quiet'], { input: ndjson(row('Persons', 1)), env: { ASB_CONNECTION_STRING: cs }, timeoutMs: 60_000 });
      expect(r.code, r.stderr).toBe(ExitCodes.USAGE);
      expect(r.stderr).toMatch(/^asb-sink: connection_string is not a Service Bus connection string/);
      expect(r.stderr).not.toContain('s3cr3t');
    }
    const sql = await spawnNode(join(ROOT, 'dist/bin/mssql-cdc.js'), ['--tables', 'Persons'], { env: { MSSQL_CONNECTION_STRING: 'Password=s3cr3t-key;garbage' }, timeoutMs: 60_000 });
    expect(sql.code).toBe(ExitCodes.USAGE);
    expect(sql.stderr).toContain('mssql-cdc: the SQL Server connection string names no server');
    expect(sql.stderr).not.toContain('s3cr3t');
  }, 120_000);
  it('on_missing_queue warns when the queue it finds takes replays as new messages (no duplicate detection)', async () => {
    broker.faults.serverBusyOnTransfer = undefined;
    const r = await spawnNode(BIN, [], {
      input: ndjson({ command: 'run', config: { connection_string: broker.connectionString, on_missing_queue: 'create', task: 'demo', queue_duplicate_detection: false, quiet: true } }, row('Customers', 1), cp(1)),
    });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^asb-sink: warning: queue Customers_cdc_events: duplicate detection is off on this queue: records sent again after a failure arrive twice/m);
  });

  it('warns when it resumes from a position older than the duplicate detection window', async () => {
    const header = (savedAt: string) => ({ command: 'run', config: { connection_string: broker.connectionString, quiet: true, queue_duplicate_detection_window: 'PT10M' }, protocol: 1, savedAt });
    const old = await spawnNode(BIN, [], { input: ndjson(header(new Date(Date.now() - 3_600_000).toISOString()), row('Persons', 1), cp(1)) });
    expect(old.code).toBe(0);
    expect(old.stderr).toMatch(/^asb-sink: warning: resuming from a position stored 60 min ago, longer than the queues' duplicate detection window \(PT10M\)/m);
    const recent = await spawnNode(BIN, [], { input: ndjson(header(new Date(Date.now() - 60_000).toISOString()), row('Persons', 2), cp(2)) });
    expect(recent.stderr).not.toContain('warning');
  });

  it('refuses queue_sessions = true without session_key at config validation (exit 2), before connecting', async () => {
    const input = ndjson({ command: 'run', config: { connection_string: broker.connectionString, queue_sessions: true }, protocol: 1 }, row('Persons', 1));
    const r = await spawnNode(BIN, [], { input });
    expect(r.code).toBe(ExitCodes.USAGE);
    expect(r.lines()).toEqual([{ status: 'error', command: 'run', code: ErrorCodes.CONFIG, message: expect.stringMatching(/^config\.queue_sessions: session-enabled queues need session_key/) }]);
    expect(broker.transfers).toEqual([]);
  });

  it('refuses to start without a connection string or namespace (exit 2)', async () => {
    const r = await spawnNode(BIN, ['--standalone'], { input: '', env: { ASB_CONNECTION_STRING: '', ASB_NAMESPACE: '' } });
    expect(r.code).toBe(ExitCodes.USAGE);
    expect(r.stderr).toMatch(/^asb-sink needs connection_string \(or ASB_CONNECTION_STRING\), or namespace/);
  });

  it('on SIGTERM stops reading, delivers what it has, acknowledges it and exits 143', async () => {
    const r = await spawnNode(BIN, [], {
      input: ndjson({ command: 'run', config: { connection_string: broker.connectionString, progress_ms: 0, quiet: true } }, row('Persons', 1), cp(1), row('Persons', 2), cp(2)),
      keepStdinOpen: true,
      onSpawn: (child) => {
        let out = '';
        child.stdout!.on('data', (d) => {
          out += d;
          if (out.includes('"position":{"lsn":1}')) child.kill('SIGTERM');
        });
      },
    });
    expect(r.code).toBe(ExitCodes.TERMINATED);
    expect(r.lines()).toEqual([{ status: 'ready', protocol: 1 }, cp(1), cp(2)]);
    expect(broker.bodies('Persons_cdc_events')).toHaveLength(2);
  });

  it('--help lists the options with their defaults and environment variables, never a secret default', async () => {
    const r = await spawnNode(BIN, ['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--connection-string <string>');
    expect(r.stdout).toContain('env ASB_CONNECTION_STRING');
    expect(r.stdout).toContain('--linger-ms <integer>');
    expect(r.stdout).toContain('default 20');
  });
});
