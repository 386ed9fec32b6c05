/**
 * `dstream run --metrics-port`: the metrics, /healthz and /readyz of a real run (generator ->
 * asb-sink over the AMQP test broker), with the output built in (objects in one process) and as
 * an executable (NDJSON over a pipe), scraped while it runs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DSTREAM_BIN, ROOT } from '../support/process.js';
import { get, scrape, total, until } from '../support/prometheus.js';
import { useBroker } from '../support/use-broker.js';

const TABLES = ['Persons', 'Orders', 'Customers'];
const broker = useBroker((b) => {
  for (const t of TABLES) b.createQueue(`${t}_cdc_events`, { requiresDuplicateDetection: true });
});
/** A key that must never show in anything dstream serves. */
const SECRET = 's3cr3tKeyValue';
const connectionString = () => `Endpoint=sb://127.0.0.1:${broker().port};SharedAccessKeyName=k;SharedAccessKey=${SECRET};UseDevelopmentEmulator=true`;

interface Running {
  child: ChildProcess;
  base: string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const dirs: string[] = [];
const children: ChildProcess[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** `flag`: --metrics-port 0 on the command line; `block`: metrics { port = 0 } in the task file. */
async function startRun(output: 'built-in' | 'executable', outputConfig = '', how: 'flag' | 'block' = 'flag'): Promise<Running> {
  const dir = await mkdtemp(join(tmpdir(), 'dstream-metrics-'));
  dirs.push(dir);
  const out = output === 'built-in' ? 'provider = "asb-sink"' : `provider_path = "${join(ROOT, 'dist/bin/asb-sink.js')}"`;
  await writeFile(
    join(dir, 'dstream.hcl'),
    `task "demo" {
  input {
    provider = "generator"
    config {
      rate = 300
      count = 0
    }
  }
  output {
    ${out}
    config {
      connection_string = "{{ env "ASB_CONNECTION_STRING" }}"
      progress_ms = 0
      ${outputConfig}
    }
  }
${how === 'block' ? '  metrics {\n    port = 0\n    host = "127.0.0.1"\n  }\n' : ''}}
`,
  );
  const child = spawn(process.execPath, [DSTREAM_BIN, 'run', 'demo', ...(how === 'flag' ? ['--metrics-port', '0'] : [])], {
    cwd: dir,
    env: { ...process.env, ASB_CONNECTION_STRING: connectionString() },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  const base = await until('the metrics address on stderr', async () => /^dstream: metrics at (http:\/\/\S+)\/metrics/m.exec(stderr)?.[1], 30_000).catch((err: Error) => {
    throw new Error(`${err.message}\n${stderr}`);
  });
  return { child, base, stderr: () => stderr, exited };
}

const received = (queue: string) => broker().queue(queue)?.received ?? 0;
const receivedAll = () => TABLES.reduce((a, t) => a + received(`${t}_cdc_events`), 0);
const stored = () => TABLES.reduce((a, t) => a + (broker().queue(`${t}_cdc_events`)?.messages.length ?? 0), 0);

async function stop(run: Running): Promise<void> {
  run.child.kill('SIGTERM');
  const exit = await run.exited;
  expect(exit.code, run.stderr()).toBe(143);
}

describe.each(['built-in', 'executable'] as const)('dstream run --metrics-port, output %s', (output) => {
  it('row counters per table and destination equal what the broker received; seconds behind grows while the broker is frozen and falls after', async () => {
    const run = await startRun(output);
    await until('rows at the broker', async () => (receivedAll() >= 100 ? true : undefined));
    // Frozen: sends are held, neither stored nor answered; what was accepted before stays put.
    broker().freeze();
    await until('a send held by the frozen broker', async () => (broker().heldTransfers > 0 ? true : undefined));
    const frozenAt = receivedAll();
    const counted = await until('metrics to catch up with the broker', async () => {
      const { samples } = await scrape(run.base);
      return total(samples, 'dstream_rows_delivered_total') === receivedAll() ? samples : undefined;
    });
    expect(receivedAll()).toBe(frozenAt);
    for (const t of TABLES) {
      expect(total(counted, 'dstream_rows_delivered_total', { table: `dbo.${t}`, destination: `${t}_cdc_events` })).toBe(received(`${t}_cdc_events`));
      // Each generated row is well over 50 bytes as a message.
      expect(total(counted, 'dstream_bytes_delivered_total', { table: `dbo.${t}`, destination: `${t}_cdc_events` })).toBeGreaterThanOrEqual(received(`${t}_cdc_events`) * 50);
    }
    expect(total(counted, 'dstream_bytes_delivered_total')).toBeGreaterThan(frozenAt * 50);
    // The generator is built in: its metrics reach the executor directly, not behind the rows the frozen output holds back.
    await until('rows read while frozen', async () => (total((await scrape(run.base)).samples, 'dstream_rows_read_total') >= frozenAt ? true : undefined), 5_000);
    // Acknowledgements and stored positions follow the accepted rows (the sink's next metrics line, the saver's
    // next write at most 200 ms later): the rows accepted before the freeze bring each of them above 0.
    await until('checkpoints acknowledged and stored, sends timed', async () => {
      const { samples: s } = await scrape(run.base);
      return total(s, 'dstream_checkpoints_acknowledged_total', { provider: 'asb-sink' }) > 0 &&
        total(s, 'dstream_checkpoints_stored_total', { task: 'demo' }) > 0 &&
        total(s, 'dstream_send_duration_seconds_count') > 0
        ? true
        : undefined;
    });
    expect(total(counted, 'dstream_batch_fill_ratio_count')).toBe(total(counted, 'dstream_batches_sent_total'));
    const behind = (s: Awaited<ReturnType<typeof scrape>>['samples']) => Math.max(...TABLES.map((t) => total(s, 'dstream_seconds_behind_source', { destination: `${t}_cdc_events` })));
    const first = await until('seconds behind above 1 s while frozen', async () => {
      const b = behind((await scrape(run.base)).samples);
      return b > 1 ? b : undefined;
    });
    const later = await until('seconds behind growing', async () => {
      const b = behind((await scrape(run.base)).samples);
      return b >= first + 1 ? b : undefined;
    });
    expect(later).toBeGreaterThan(first);
    broker().thaw();
    await until('seconds behind falling below 1 s after the thaw', async () => (behind((await scrape(run.base)).samples) < 1 ? true : undefined), 60_000);
    // Flowing again: the input has read what was delivered, and more.
    await until('rows read ahead of rows delivered', async () => {
      const { samples: s } = await scrape(run.base);
      const delivered = total(s, 'dstream_rows_delivered_total');
      return delivered > frozenAt && total(s, 'dstream_rows_read_total') >= delivered ? true : undefined;
    });
    const { text, samples } = await scrape(run.base);
    expect(total(samples, 'dstream_rows_delivered_total')).toBeGreaterThan(frozenAt);
    // Sends held by the freeze and timed out were sent again: duplicate detection dropped the copies.
    expect(stored()).toBeLessThanOrEqual(receivedAll());
    expect(text).not.toContain(SECRET);
    expect(text).not.toMatch(/SharedAccessKey|Endpoint=/);
    expect(text).toContain('process_resident_memory_bytes');
    await stop(run);
  }, 120_000);

  it('/readyz is not ready while the broker is down and ready again after; /healthz answers throughout', async () => {
    const run = await startRun(output, 'max_retries = 100\n      retry_max_ms = 500', 'block');
    expect(run.base).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    await until('ready', async () => ((await get(`${run.base}/readyz`)).status === 200 ? true : undefined));
    await until('rows at the broker', async () => (receivedAll() >= 50 ? true : undefined));
    await broker().stop();
    const down = await until('not ready while the broker is down', async () => {
      const r = await get(`${run.base}/readyz`);
      return r.status === 503 ? r.body : undefined;
    });
    expect(down).toMatch(/^not ready\n/);
    expect(down).toMatch(/^output sink: not ready \(.*_cdc_events: sends failing \((connection|timeout|other)\), retrying/m);
    expect(down).not.toContain(SECRET);
    expect((await get(`${run.base}/healthz`)).status).toBe(200);
    const { samples } = await scrape(run.base);
    expect(total(samples, 'dstream_retries_total', { component: 'service-bus' })).toBeGreaterThan(0);
    await broker().restart();
    const up = await until('ready after the broker is back', async () => {
      const r = await get(`${run.base}/readyz`);
      return r.status === 200 ? r.body : undefined;
    }, 60_000);
    expect(up).toMatch(/^ready\ninput: ready\noutput: ready\n/);
    await stop(run);
  }, 120_000);
});
