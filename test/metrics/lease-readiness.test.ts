/**
 * Two `dstream run` workers sharing a task through leases (mssql-cdc over the TDS test server,
 * positions in the SQL checkpoint store), each serving its metrics and probes. The worker that
 * loses its lease turns not ready, then a ready standby; the one that takes it over reports it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { leaseResource } from '../../lib/sources/mssql/lease.js';
import { sqlServerConnector } from '../../lib/sources/mssql/sqlserver.js';
import { shopModel } from '../support/cdc-model.js';
import { DSTREAM_BIN } from '../support/process.js';
import { get, scrape, total, until } from '../support/prometheus.js';
import { SQL_PASSWORD, sqlServerForTest, type TestSqlServer } from '../support/sql-server.js';

const dirs: string[] = [];
const children: ChildProcess[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGCONT');
      c.kill('SIGKILL');
    }
  }
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

interface Worker {
  child: ChildProcess;
  base: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

async function worker(sql: TestSqlServer, name: string): Promise<Worker> {
  const dir = await mkdtemp(join(tmpdir(), `dstream-lease-${name}-`));
  dirs.push(dir);
  await writeFile(
    join(dir, 'dstream.hcl'),
    `task "shop" {
  input {
    provider = "mssql-cdc"
    config {
      connection_string = "{{ env "MSSQL_CONNECTION_STRING" }}"
      tables = ["Persons"]
      start = "earliest"
      lease = true
      poll_interval_ms = 20
      max_poll_interval_ms = 100
      progress_ms = 0
    }
  }
  output {
    provider = "files"
    config {
      dir = "out"
    }
  }
  state {
    store = "sqlserver"
    connection_string = "{{ env "MSSQL_CONNECTION_STRING" }}"
    table = "dstream.checkpoints"
  }
}
`,
  );
  const child = spawn(process.execPath, [DSTREAM_BIN, 'run', 'shop', '--metrics-port', '0', '--metrics-host', '127.0.0.1'], {
    cwd: dir,
    env: { ...process.env, MSSQL_CONNECTION_STRING: sql.connectionString },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdout.resume();
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const base = await until('the metrics address', async () => /^dstream: metrics at (http:\/\/\S+)\/metrics/m.exec(stderr)?.[1]).catch((err: Error) => {
    throw new Error(`${err.message}\n${stderr}`);
  });
  expect(base).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  return { child, base, stderr: () => stderr, exited };
}

const leases = async (w: Worker) => total((await scrape(w.base)).samples, 'dstream_leases_held', { table: 'dbo.Persons' });
const readyz = (w: Worker) => get(`${w.base}/readyz`);

describe('readiness of workers sharing a task through leases', () => {
  it('a worker that loses its lease turns not ready, then a ready standby; the standby takes the lease over', async () => {
    const sql = await sqlServerForTest(shopModel());
    const m = sql.model;
    const q = await sqlServerConnector(sql.connectionString)();
    await q.createCheckpointTable({ schema: 'dstream', table: 'checkpoints' });
    await q.close();
    m.commit([{ table: 'Persons', op: 'insert', row: { Id: 1, Name: 'p1', Email: 'p1@example.com' } }]);

    const a = await worker(sql, 'a');
    await until('A ready, holding the lease', async () => ((await readyz(a)).status === 200 && (await leases(a)) === 1 ? true : undefined));
    const b = await worker(sql, 'b');
    const standby = await until('B a ready standby', async () => {
      const r = await readyz(b);
      return r.status === 200 && /standby/.test(r.body) ? r.body : undefined;
    });
    expect(standby).toMatch(/^ready\n/);
    expect(standby).toMatch(/^input source: ready \(standby: every table is leased by another worker\)$/m);
    expect(total((await scrape(b.base)).samples, 'dstream_source_standby', { provider: 'mssql-cdc' })).toBe(1);

    // A stops (a long pause) and its lease session dies meanwhile: SQL Server releases the lock,
    // and B takes it before A runs again.
    a.child.kill('SIGSTOP');
    m.killSession(m.lockOwner(leaseResource('shop', { schema: 'dbo', table: 'Persons' }))!);
    await until('B holding the lease', async () => ((await leases(b)) === 1 ? true : undefined), 30_000);
    expect((await readyz(b)).status).toBe(200);
    a.child.kill('SIGCONT');
    const seen = new Set<string>();
    const body = await until('A a ready standby', async () => {
      const r = await readyz(a);
      seen.add(r.status === 200 ? (/standby/.test(r.body) ? 'standby' : 'ready') : 'not ready');
      return r.status === 200 && /standby/.test(r.body) ? r.body : undefined;
    }, 30_000);
    expect(seen).toContain('not ready');
    expect(body).toMatch(/^input source: ready \(standby/m);
    const { samples, text } = await scrape(a.base);
    expect(total(samples, 'dstream_leases_held', { table: 'dbo.Persons' })).toBe(0);
    expect(total(samples, 'dstream_source_standby', { provider: 'mssql-cdc' })).toBe(1);
    for (const w of [a, b]) {
      const all = `${(await scrape(w.base)).text}${(await readyz(w)).body}${w.stderr()}`;
      expect(all).not.toContain(SQL_PASSWORD);
    }
    expect(text).not.toContain(sql.connectionString);
    for (const w of [a, b]) w.child.kill('SIGTERM');
    expect(await a.exited).toBe(143);
    expect(await b.exited).toBe(143);
  }, 120_000);
});
