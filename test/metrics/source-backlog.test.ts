/**
 * `dstream_source_backlog_commits` of a real `dstream run` (mssql-cdc over the TDS test server ->
 * asb-sink on the AMQP test broker): while the broker is frozen the reader is held back, commits
 * pile up in the source and the backlog rises with them; after the thaw the run catches up and it
 * falls to 0. With mssql-cdc as an executable, its metrics lines travel behind its data: while
 * the output stalls they cannot reach `dstream run`, whose figures for it stay as they were.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { shopModel, type CdcModel } from '../support/cdc-model.js';
import { DSTREAM_BIN, ROOT } from '../support/process.js';
import { scrape, total, until } from '../support/prometheus.js';
import { sqlServerForTest } from '../support/sql-server.js';
import { useBroker } from '../support/use-broker.js';

const QUEUE = 'Persons_cdc_events';
const broker = useBroker((b) => b.createQueue(QUEUE, { requiresDuplicateDetection: true }));

const dirs: string[] = [];
const children: ChildProcess[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

interface Running {
  child: ChildProcess;
  base: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

async function startRun(input: 'built-in' | 'executable', mssql: string): Promise<Running> {
  const dir = await mkdtemp(join(tmpdir(), 'dstream-backlog-'));
  dirs.push(dir);
  const provider = input === 'built-in' ? 'provider = "mssql-cdc"' : `provider_path = "${join(ROOT, 'dist/bin/mssql-cdc.js')}"`;
  await writeFile(
    join(dir, 'dstream.hcl'),
    `task "shop" {
  input {
    ${provider}
    config {
      connection_string = "{{ env "MSSQL_CONNECTION_STRING" }}"
      tables = ["Persons"]
      start = "earliest"
      poll_interval_ms = 50
      max_poll_interval_ms = 200
      progress_ms = 0
    }
  }
  output {
    provider = "asb-sink"
    config {
      connection_string = "{{ env "ASB_CONNECTION_STRING" }}"
      progress_ms = 0
      max_retries = 100
    }
  }
}
`,
  );
  const asb = `Endpoint=sb://127.0.0.1:${broker().port};SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true`;
  const child = spawn(process.execPath, [DSTREAM_BIN, 'run', 'shop', '--metrics-port', '0', '--metrics-host', '127.0.0.1'], {
    cwd: dir,
    env: { ...process.env, MSSQL_CONNECTION_STRING: mssql, ASB_CONNECTION_STRING: asb },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(child);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const base = await until('the metrics address', async () => /^dstream: metrics at (http:\/\/\S+)\/metrics/m.exec(stderr)?.[1]).catch((err: Error) => {
    throw new Error(`${err.message}\n${stderr}`);
  });
  return { child, base, stderr: () => stderr, exited };
}

let nextId = 1;
/** `n` transactions of one insert each. */
function commit(m: CdcModel, n: number): void {
  for (let i = 0; i < n; i++, nextId++) m.commit([{ table: 'Persons', op: 'insert', row: { Id: nextId, Name: `p${nextId}`, Email: `p${nextId}@example.com` } }]);
}

const backlog = async (run: Running) => {
  const { samples } = await scrape(run.base);
  return samples.some((s) => s.name === 'dstream_source_backlog_commits') ? total(samples, 'dstream_source_backlog_commits', { provider: 'mssql-cdc' }) : undefined;
};
const received = () => broker().queue(QUEUE)?.received ?? 0;

/** A run over 20 commits, once they are at the broker and the backlog reads 0; then the broker frozen and 3,000 more commits held back. */
async function heldBack(input: 'built-in' | 'executable') {
  const sql = await sqlServerForTest(shopModel());
  nextId = 1;
  commit(sql.model, 20);
  const run = await startRun(input, sql.connectionString);
  await until('the first rows at the broker', async () => (received() >= 20 ? true : undefined));
  await until('backlog 0 once everything is read', async () => ((await backlog(run)) === 0 ? true : undefined));
  broker().freeze();
  // More than the run's buffers hold: the reader stops, held in a window, while commits go on.
  commit(sql.model, 3000);
  await until('a send held by the frozen broker', async () => (broker().heldTransfers > 0 ? true : undefined));
  return { sql, run };
}

describe('dstream_source_backlog_commits during dstream run', () => {
  it('rises while the broker is frozen and the reader held back, and falls to 0 after the thaw (mssql-cdc built in)', async () => {
    const { sql, run } = await heldBack('built-in');
    const first = await until('a backlog while held back', async () => {
      const b = await backlog(run);
      return b !== undefined && b > 0 ? b : undefined;
    });
    commit(sql.model, 500);
    const later = await until('the backlog rising with the commits', async () => {
      const b = await backlog(run);
      return b !== undefined && b >= first + 500 ? b : undefined;
    });
    // Counted from where the reader reads (the window in hand) to the max LSN: never more than was committed.
    expect(later).toBeLessThanOrEqual(3520);

    broker().thaw();
    await until('every row at the broker', async () => (received() >= 3520 ? true : undefined), 90_000);
    await until('backlog 0 after the thaw', async () => ((await backlog(run)) === 0 ? true : undefined));
    run.child.kill('SIGTERM');
    expect(await run.exited, run.stderr()).toBe(143);
  }, 150_000);

  it('mssql-cdc as an executable: its figures stay as they were when the output stalled (its metrics lines wait behind its data), and are current again after the thaw', async () => {
    const { sql, run } = await heldBack('executable');
    // The output's figures are current (its acknowledgements are always read): seconds behind grows.
    const behind = async () => total((await scrape(run.base)).samples, 'dstream_seconds_behind_source', { destination: QUEUE });
    await until('the output 2 s behind', async () => ((await behind()) >= 2 ? true : undefined));
    const read = async () => total((await scrape(run.base)).samples, 'dstream_rows_read_total');
    const stalled = { backlog: await backlog(run), read: await read() };
    commit(sql.model, 500);
    const since = await behind();
    await until('the output 3 s further behind', async () => ((await behind()) >= since + 3 ? true : undefined));
    // Three intervals later the input's figures have not moved, though 500 more commits wait.
    expect({ backlog: await backlog(run), read: await read() }).toEqual(stalled);
    expect(stalled.read).toBeLessThan(3520);

    broker().thaw();
    await until('every row at the broker', async () => (received() >= 3520 ? true : undefined), 90_000);
    await until('the input current again: every row read and backlog 0', async () => ((await read()) === 3520 && (await backlog(run)) === 0 ? true : undefined));
    run.child.kill('SIGTERM');
    expect(await run.exited, run.stderr()).toBe(143);
  }, 150_000);
});
