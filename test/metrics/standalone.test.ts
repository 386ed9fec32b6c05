/**
 * The standalone providers serve their own endpoints with --metrics-port: asb-sink in a pipe
 * (AMQP test broker), mssql-cdc (TDS test server).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { shopModel } from '../support/cdc-model.js';
import { ndjson, ROOT } from '../support/process.js';
import { get, scrape, total, until } from '../support/prometheus.js';
import { SQL_PASSWORD, sqlServerForTest } from '../support/sql-server.js';
import { useBroker } from '../support/use-broker.js';

const broker = useBroker((b) => b.createQueue('Persons_cdc_events'));
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

function start(bin: string, args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, [join(ROOT, 'dist/bin', bin), ...args], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  let stdout = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const base = until('the metrics address', async () => new RegExp(`^${bin.replace('.js', '')}: metrics at (http://\\S+)/metrics`, 'm').exec(stderr)?.[1]).catch((err: Error) => {
    throw new Error(`${err.message}\n${stderr}`);
  });
  return { child, base, exited, stderr: () => stderr, stdout: () => stdout };
}

const row = (n: number) => ({ source: 'mssql-cdc', type: 'cdc', data: { Id: n }, metadata: { TableName: 'Persons', OperationType: 'Insert', LSN: `0x${n.toString(16).padStart(20, '0')}`, Seq: '0x01', CommitTime: new Date().toISOString() } });
const cp = (n: number) => ({ source: 'mssql-cdc', type: 'checkpoint', data: { position: { lsn: n } }, metadata: {} });

describe('standalone providers with --metrics-port', () => {
  it('asb-sink: rows delivered, checkpoints acknowledged, ready; no secret served', async () => {
    const secret = 'an0therS3cret';
    const cs = `Endpoint=sb://127.0.0.1:${broker().port};SharedAccessKeyName=k;SharedAccessKey=${secret};UseDevelopmentEmulator=true`;
    const p = start('asb-sink.js', ['--metrics-port', '0', '--metrics-host', '127.0.0.1', '--progress-ms', '0'], { ASB_CONNECTION_STRING: cs });
    p.child.stdin!.write(ndjson(row(1), row(2), row(3), cp(3)));
    const base = await p.base;
    const samples = await until('3 rows delivered', async () => {
      const { samples: s } = await scrape(base);
      return total(s, 'dstream_rows_delivered_total', { table: 'dbo.Persons', destination: 'Persons_cdc_events' }) === 3 ? s : undefined;
    });
    expect(broker().queue('Persons_cdc_events')!.received).toBe(3);
    expect(total(samples, 'dstream_checkpoints_acknowledged_total', { provider: 'asb-sink' })).toBe(1);
    expect(total(samples, 'dstream_seconds_behind_source', { destination: 'Persons_cdc_events' })).toBe(0);
    expect(total(samples, 'dstream_last_delivered_commit_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000 - 60);
    const ready = await get(`${base}/readyz`);
    expect(ready).toMatchObject({ status: 200, body: 'ready\nsink: ready\n' });
    const text = (await scrape(base)).text;
    expect(text).not.toContain(secret);
    expect(p.stderr()).not.toContain(secret);
    p.child.stdin!.end();
    expect(await p.exited).toBe(0);
  }, 60_000);

  it('mssql-cdc: rows read per table, connected, source backlog, ready; no password served', async () => {
    const sql = await sqlServerForTest(shopModel());
    for (let i = 1; i <= 5; i++) sql.model.commit([{ table: 'Persons', op: 'insert', row: { Id: i, Name: `p${i}`, Email: `p${i}@example.com` } }]);
    const p = start('mssql-cdc.js', ['--tables', 'Persons', '--start', 'earliest', '--poll-interval-ms', '20', '--progress-ms', '0', '--metrics-port', '0'], { MSSQL_CONNECTION_STRING: sql.connectionString });
    const base = await p.base;
    const samples = await until('5 rows read', async () => {
      const { samples: s } = await scrape(base);
      return total(s, 'dstream_rows_read_total', { table: 'dbo.Persons' }) === 5 ? s : undefined;
    });
    expect(total(samples, 'dstream_source_connected', { provider: 'mssql-cdc' })).toBe(1);
    // Everything read: no commit waits in the source.
    await until('the source backlog at 0', async () => ((await scrape(base)).samples.find((s) => s.name === 'dstream_source_backlog_commits' && s.labels.provider === 'mssql-cdc')?.value === 0 ? true : undefined));
    expect(await get(`${base}/readyz`)).toMatchObject({ status: 200, body: 'ready\nsource: ready\n' });
    expect(p.stdout().trim().split('\n').filter((l) => l.includes('"cdc"'))).toHaveLength(5);
    expect((await scrape(base)).text).not.toContain(SQL_PASSWORD);
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(143);
  }, 60_000);
});
