/**
 * The operator's pieces through lib/: registries of their own, the endpoints, readiness, metrics
 * lines between runProvider() and the executor, and prom-client loaded only when asked for.
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { createMetrics, Readiness, runProvider, serveOps, type OpsServer } from '../../lib/index.js';
import type { TaskConfig } from '../../lib/config/tasks.js';
import { BUILTINS } from '../../lib/providers/builtins.js';
import { runTask } from '../../lib/executor/executor.js';
import { FileStateStore } from '../../lib/state/state-store.js';
import { exposition } from '../../lib/metrics/registry.js';
import { ROOT } from '../support/process.js';
import { get, parseSamples, scrape, total } from '../support/prometheus.js';

const tmp = (p: string) => mkdtempSync(join(tmpdir(), `dstream-ops-${p}`));

describe('metrics registries', () => {
  it('each createMetrics() has a registry of its own', async () => {
    const a = await createMetrics();
    const b = await createMetrics();
    a.rowsRead.inc({ table: 'dbo.Persons' }, 3);
    expect(total(parseSamples(await a.registry.metrics()), 'dstream_rows_read_total', { table: 'dbo.Persons' })).toBe(3);
    expect(total(parseSamples(await b.registry.metrics()), 'dstream_rows_read_total')).toBe(0);
  });

  it('merges several registries into one text: same name and labels are summed', async () => {
    const a = await createMetrics();
    const b = await createMetrics();
    a.rowsDelivered.inc({ table: 'dbo.Persons', destination: 'p' }, 2);
    b.rowsDelivered.inc({ table: 'dbo.Persons', destination: 'p' }, 5);
    b.rowsDelivered.inc({ table: 'dbo.Orders', destination: 'o' }, 1);
    b.sendSeconds.observe({ destination: 'p' }, 0.02);
    const { body, contentType } = await exposition([await a.registry.getMetricsAsJSON(), await b.registry.getMetricsAsJSON()]);
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    const s = parseSamples(body);
    expect(total(s, 'dstream_rows_delivered_total', { table: 'dbo.Persons' })).toBe(7);
    expect(total(s, 'dstream_rows_delivered_total', { table: 'dbo.Orders' })).toBe(1);
    expect(total(s, 'dstream_send_duration_seconds_count')).toBe(1);
    expect(body.match(/^# TYPE dstream_rows_delivered_total counter$/gm)).toHaveLength(1);
  });

  it('import of dstream does not load prom-client; the first createMetrics() does', async () => {
    const script = `
      import { createRequire } from 'node:module';
      const r = createRequire(${JSON.stringify(`${ROOT}package.json`)});
      const loaded = () => Object.keys(r.cache).some((k) => k.includes('/prom-client/'));
      const d = await import(${JSON.stringify(`${ROOT}dist/lib/index.js`)});
      const before = loaded();
      await d.createMetrics();
      console.log(JSON.stringify({ before, after: loaded() }));`;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script]);
    expect(JSON.parse(stdout)).toEqual({ before: false, after: true });
  });
});

describe('serveOps(): /metrics, /healthz, /readyz', () => {
  it('serves the metrics, liveness and readiness with its reasons', async () => {
    const metrics = await createMetrics();
    const health = new Readiness();
    health.set('source', false, 'connecting');
    const server = await serveOps({ port: 0, host: '127.0.0.1', metrics: async () => ({ contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }), readiness: () => health.report() });
    try {
      metrics.checkpointsStored.inc({ task: 'demo' });
      const m = await get(`${server.url}/metrics`);
      expect(m.status).toBe(200);
      expect(m.type).toMatch(/^text\/plain/);
      expect(total(parseSamples(m.body), 'dstream_checkpoints_stored_total', { task: 'demo' })).toBe(1);
      expect(await get(`${server.url}/healthz`)).toMatchObject({ status: 200, body: 'ok\n' });
      expect(await get(`${server.url}/readyz`)).toMatchObject({ status: 503, body: 'not ready\nsource: not ready (connecting)\n' });
      health.set('source', true);
      health.set('sink', true);
      expect(await get(`${server.url}/readyz`)).toMatchObject({ status: 200, body: 'ready\nsource: ready\nsink: ready\n' });
      expect((await get(`${server.url}/nope`)).status).toBe(404);
    } finally {
      await server.close();
    }
  });

  it('a port in use is a clear error naming the port and the option', async () => {
    const taken = createServer().listen(0, '127.0.0.1');
    await new Promise((r) => taken.once('listening', r));
    const port = (taken.address() as { port: number }).port;
    try {
      const err = await serveOps({ port, host: '127.0.0.1', metrics: async () => ({ contentType: 'text/plain', body: '' }), readiness: () => ({ ready: true, parts: {} }) }).catch((e: Error & { code: string }) => e);
      expect(err).toMatchObject({ code: 'DSTREAM_ERR_CONFIG', message: `metrics port ${port} is in use; pick another with --metrics-port (or metrics { port = N })` });
    } finally {
      taken.close();
    }
  });
});

/** Runs a provider in process over NDJSON, with the given header; returns its stdout lines. */
async function runWithHeader(header: Record<string, unknown>): Promise<Array<Record<string, unknown>>> {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stderr.resume();
  let text = '';
  stdout.setEncoding('utf8').on('data', (d: string) => (text += d));
  stdin.end(`${JSON.stringify(header)}\n`);
  const code = await runProvider(
    {
      name: 'counter',
      async run(ctx) {
        ctx.health.set('source', true);
        ctx.metrics?.rowsRead.inc({ table: 'dbo.Persons' }, 2);
        ctx.output.write({ type: 'cdc', data: { Id: 1 }, metadata: { TableName: 'Persons' } });
        await new Promise((r) => setTimeout(r, 60));
      },
    },
    { stdin, stdout, stderr, argv: [], env: {}, signals: null },
  );
  expect(code).toBe(0);
  return text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('metrics lines of the protocol', () => {
  it('a provider asked for metrics writes metrics lines, the last with its final counts', async () => {
    const lines = await runWithHeader({ command: 'run', config: {}, protocol: 1, metrics: { interval_ms: 20 } });
    expect(lines[0]).toEqual({ status: 'ready', protocol: 1 });
    const metricLines = lines.filter((l) => l.type === 'metrics') as Array<{ data: { health: unknown; metrics: Array<{ name: string; values: Array<{ value: number }> }> } }>;
    expect(metricLines.length).toBeGreaterThanOrEqual(2);
    const last = metricLines.at(-1)!;
    expect(last.data.health).toEqual({ source: { ready: true } });
    expect(last.data.metrics.find((m) => m.name === 'dstream_rows_read_total')!.values).toEqual([{ value: 2, labels: { table: 'dbo.Persons' } }]);
    expect(lines.at(-1)!.type).toBe('metrics');
  });

  it('a provider whose stdout is not read (the output stalled) adds no metrics lines behind its data: one goes out when it drains', async () => {
    const stdin = new PassThrough();
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    stderr.resume();
    stdin.end(`${JSON.stringify({ command: 'run', config: {}, protocol: 1, metrics: { interval_ms: 10 } })}\n`);
    const ROWS = 3000;
    const done = runProvider(
      {
        name: 'counter',
        async run(ctx) {
          for (let i = 0; i < ROWS; i++) {
            ctx.metrics?.rowsRead.inc({ table: 'dbo.Persons' });
            if (!ctx.output.write({ type: 'cdc', data: { Id: i, Pad: 'x'.repeat(100) }, metadata: { TableName: 'Persons' } })) await once(ctx.output, 'drain');
          }
        },
      },
      { stdin, stdout, stderr, argv: [], env: {}, signals: null },
    );
    // Nobody reads for a while (about 100 intervals): the provider is held back with its data.
    await new Promise((r) => setTimeout(r, 1000));
    let text = '';
    stdout.setEncoding('utf8').on('data', (d: string) => (text += d));
    expect(await done).toBe(0);
    const kinds = text.trim().split('\n').map((l) => (JSON.parse(l) as { type?: string; status?: string }).type ?? 'ready');
    expect(kinds.filter((k) => k === 'cdc')).toHaveLength(ROWS);
    // Metrics lines in a row between two data lines: written while the provider waited to write
    // the next row. A line per interval while held back would make about a hundred.
    let run = 0;
    let most = 0;
    for (const k of kinds.slice(0, kinds.lastIndexOf('cdc'))) {
      run = k === 'metrics' ? run + 1 : 0;
      most = Math.max(most, run);
    }
    expect(most).toBeGreaterThan(0);
    expect(most).toBeLessThanOrEqual(2);
  });

  it('a provider not asked writes none (older executors, pipes): only its handshake and data', async () => {
    const lines = await runWithHeader({ command: 'run', config: {}, protocol: 1 });
    expect(lines.map((l) => l.type ?? l.status)).toEqual(['ready', 'cdc']);
    const legacy = await runWithHeader({});
    expect(legacy.map((l) => l.type ?? l.status)).toEqual(['cdc']);
  });

  it('runTask with metrics and an input executable built on runProvider(): its metrics lines are taken out of the data, never delivered as rows', async () => {
    const out = tmp('o-');
    const task = executableToFiles('test/fixtures/echo-provider.mjs', { mode: 'input', count: 40, delay_ms: 40 }, out);
    const summary = await runTask(task, { builtins: BUILTINS, store: new FileStateStore(tmp('s-')), metrics: { port: 0, host: '127.0.0.1', intervalMs: 100 } });
    expect(summary.rows).toBe(40);
    const file = readdirSync(out).find((f) => f.endsWith('.ndjson'))!;
    const lines = readFileSync(join(out, file), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type?: string });
    expect(lines).toHaveLength(40);
    expect(lines.filter((l) => l.type === 'metrics')).toEqual([]);
  });

  it('runTask with metrics and a provider of the older dstream (no handshake, no metrics): it runs as before, and the endpoints close with the run', async () => {
    const out = tmp('o-');
    const task = executableToFiles('test/fixtures/fake-provider.mjs', { count: 7 }, out);
    let server: OpsServer | undefined;
    const summary = await runTask(task, {
      builtins: BUILTINS,
      store: new FileStateStore(tmp('s-')),
      env: { ...process.env, FAKE_MODE: 'legacy-input' },
      metrics: { port: 0, host: '127.0.0.1', onListening: (s) => (server = s) },
    });
    expect(summary.rows).toBe(7);
    const file = readdirSync(out).find((f) => f.endsWith('.ndjson'))!;
    expect(readFileSync(join(out, file), 'utf8').trim().split('\n')).toHaveLength(7);
    // Served while it ran, closed when it ended.
    expect(server).toBeDefined();
    await expect(scrape(server!.url)).rejects.toThrow();
  });
});

/** A task whose input is an executable of test/fixtures and whose output is the built-in files sink. */
function executableToFiles(fixture: string, config: Record<string, unknown>, dir: string): TaskConfig {
  return {
    name: 'demo',
    type: 'providers',
    file: 'dstream.hcl',
    line: 1,
    input: { providerPath: join(ROOT, fixture), config },
    output: { provider: 'files', config: { dir } },
  };
}
