import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCodes, type Envelope } from '../../lib/index.js';
import { generateChanges } from '../../lib/sources/generator/generator.js';
import { DSTREAM_BIN, ROOT, spawnNode, stopped } from '../support/process.js';

const tmp = (p: string) => mkdtempSync(join(tmpdir(), p));

function taskFile(count: number, rate = 0): { config: string; out: string; state: string; env: Record<string, string> } {
  const dir = tmp('dstream-cli-');
  const out = join(dir, 'out');
  const config = join(dir, 'dstream.hcl');
  writeFileSync(
    config,
    `task "demo" {\n  type = "providers"\n  input {\n    provider = "generator"\n    config {\n      count = ${count}\n      rate = ${rate}\n    }\n  }\n  output {\n    provider = "files"\n    config {\n      dir = "${out}"\n    }\n  }\n}\n`,
  );
  const state = join(dir, 'state');
  return { config, out, state, env: { DSTREAM_STATE_DIR: state } };
}

const rowsIn = (dir: string): Envelope[] =>
  existsSync(dir)
    ? readdirSync(dir).flatMap((f) =>
        readFileSync(join(dir, f), 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Envelope),
      )
    : [];
const key = (e: Envelope) => `${e.metadata?.TableName}|${e.metadata?.LSN}|${e.metadata?.Seq}`;

describe('dstream task commands (spawned)', () => {
  it('validate: ok, or the error at file:line:column with exit code 2', async () => {
    const t = taskFile(10);
    const ok = await spawnNode(DSTREAM_BIN, ['validate', '--config', t.config]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toBe(`${t.config}: valid (task "demo")\n`);
    writeFileSync(t.config, 'task "demo" {\n  type = \n}\n');
    const bad = await spawnNode(DSTREAM_BIN, ['validate', '--config', t.config]);
    expect(bad.code).toBe(ExitCodes.USAGE);
    expect(bad.stderr).toMatch(new RegExp(`^dstream: ${t.config}:2:\\d+: `));
    // A built-in provider's config is checked against its schema, with the task's line.
    writeFileSync(t.config, 'task "demo" {\n  input {\n    provider = "mssql-cdc"\n    config {\n      tables = ["Persons"]\n      on_gaps = "skip"\n    }\n  }\n  output { provider = "files" }\n}\n');
    const key = await spawnNode(DSTREAM_BIN, ['validate', '--config', t.config]);
    expect(key.code).toBe(ExitCodes.USAGE);
    expect(key.stderr).toBe(`dstream: ${t.config}:6:7: task "demo" input.config.on_gaps: unknown key; did you mean "on_gap"?\n`);
    // Rules across fields too: a session queue needs the column its SessionId comes from.
    writeFileSync(t.config, 'task "demo" {\n  input { provider = "generator" }\n  output {\n    provider = "asb-sink"\n    config {\n      connection_string = "x"\n      queue_sessions = true\n    }\n  }\n}\n');
    const sessions = await spawnNode(DSTREAM_BIN, ['validate', '--config', t.config]);
    expect(sessions.code).toBe(ExitCodes.USAGE);
    expect(sessions.stderr).toMatch(new RegExp(`^dstream: ${t.config}:5:5: task "demo" output\\.config\\.queue_sessions: session-enabled queues need session_key`));
  }, 180_000);

  it('plan prints a Terraform-like report, or JSON with --json', async () => {
    const t = taskFile(10);
    const text = await spawnNode(DSTREAM_BIN, ['plan', 'demo', '--config', t.config], { env: t.env });
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`  + create file ${join(t.out, 'Persons_cdc_events.ndjson')}\n`);
    expect(text.stdout).toContain('Plan: 3 to create, 0 to change, 0 to destroy.\n');
    const json = await spawnNode(DSTREAM_BIN, ['plan', 'demo', '--config', t.config, '--json'], { env: t.env });
    expect(JSON.parse(json.stdout)).toMatchObject({ task: 'demo', command: 'plan', output: { status: 'ok', summary: 'Plan: 3 to create, 0 to change, 0 to destroy.' } });
    const unknown = await spawnNode(DSTREAM_BIN, ['plan', 'dmeo', '--config', t.config], { env: t.env });
    expect(unknown.code).toBe(ExitCodes.USAGE);
    expect(unknown.stderr).toBe(`dstream: no task "dmeo" in ${t.config}; did you mean "demo"? (tasks: demo)\n`);
  }, 180_000);

  it('run delivers, status shows the files and the stored position, destroy asks for --yes', async () => {
    const t = taskFile(300);
    const run = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', t.config, '--quiet'], { env: t.env });
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(/^dstream: task "demo": 300 rows delivered, \d+ checkpoints acknowledged \(the last one stored\) in [\d.]+ s\n$/);
    expect(rowsIn(t.out)).toHaveLength(300);
    const status = await spawnNode(DSTREAM_BIN, ['status', 'demo', '--config', t.config, '--json'], { env: t.env });
    const report = JSON.parse(status.stdout);
    expect(report.output.summary).toBe('3 of 3 files written');
    expect(report.position.position).toMatchObject({ rows: 300 });
    const refused = await spawnNode(DSTREAM_BIN, ['destroy', 'demo', '--config', t.config], { env: t.env });
    expect(refused.code).toBe(ExitCodes.USAGE);
    expect(rowsIn(t.out)).toHaveLength(300);
    const destroyed = await spawnNode(DSTREAM_BIN, ['destroy', 'demo', '--config', t.config, '--yes'], { env: t.env });
    expect(destroyed.code).toBe(0);
    expect(rowsIn(t.out)).toHaveLength(0);
  }, 180_000);

  it('SIGTERM during run: exits 143, loses nothing acknowledged, and the next run replays nothing stored', async () => {
    const t = taskFile(0, 3000);
    const run = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', t.config, '--quiet'], {
      env: t.env,
      keepStdinOpen: true,
      // Once it has stored a position (so it is surely running, however slow the machine), stop it.
      onSpawn: (child) => {
        const poll = setInterval(() => {
          if (!existsSync(join(t.state, 'tasks', 'demo.json'))) return;
          clearInterval(poll);
          setTimeout(() => child.kill('SIGTERM'), 300);
        }, 50);
        child.once('exit', () => clearInterval(poll));
      },
    });
    expect(run.code).toBe(ExitCodes.TERMINATED);
    expect(run.stderr).toMatch(/SIGTERM: stopping task "demo"/);
    const stored = JSON.parse(readFileSync(join(t.state, 'tasks', 'demo.json'), 'utf8')).position as { rows: number };
    expect(stored.rows).toBeGreaterThan(0);
    // The same seed gives the same sequence whatever the count; count only cuts it.
    const all = [...generateChanges({ seed: 1, count: stored.rows + 50 })].filter((e) => e.type !== 'checkpoint');
    const firstRun = rowsIn(t.out).map(key);
    // Everything acknowledged is on disk.
    for (const e of all.slice(0, stored.rows)) expect(firstRun).toContain(key(e));
    // The next run starts after the stored position: nothing stored is delivered twice.
    writeFileSync(t.config, readFileSync(t.config, 'utf8').replace('count = 0', `count = ${stored.rows + 50}`).replace('rate = 3000', 'rate = 0'));
    const again = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', t.config, '--quiet'], { env: t.env });
    expect(again.code).toBe(0);
    const counts = new Map<string, number>();
    for (const k of rowsIn(t.out).map(key)) counts.set(k, (counts.get(k) ?? 0) + 1);
    for (const e of all.slice(0, stored.rows)) expect(counts.get(key(e)), key(e)).toBe(1);
    for (const e of all.slice(0, stored.rows + 50)) expect(counts.get(key(e)) ?? 0).toBeGreaterThanOrEqual(1);
  }, 180_000);

  it('a provider crash fails the run with exit 1, its stderr shown once: live under its name, or (--quiet) in the error', async () => {
    const t = taskFile(10);
    const fake = join(ROOT, 'test/fixtures/fake-provider.mjs');
    writeFileSync(t.config, readFileSync(t.config, 'utf8').replace('provider = "generator"', `provider_path = "${fake}"`).replace(/config \{\n      count = 10\n      rate = 0\n    \}/, 'config {}'));
    const r = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', t.config], { env: { ...t.env, FAKE_MODE: 'crash-mid' }, timeoutMs: 60_000 });
    expect(r.code).toBe(ExitCodes.FAILURE);
    expect(r.stderr).toContain('fake-provider.mjs: lost connection to the database\n');
    expect(r.stderr).toContain(`dstream: input ${fake}: failed (exit code 1)\n`);
    expect(r.stderr.split('lost connection to the database')).toHaveLength(2);
    expect(rowsIn(t.out)).toHaveLength(5);
    const quiet = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', t.config, '--quiet'], { env: { ...t.env, FAKE_MODE: 'crash-mid' }, timeoutMs: 60_000 });
    expect(quiet.stderr).toContain(`dstream: input ${fake}: failed (exit code 1)\n--- last lines of its stderr ---\nlost connection to the database`);
    expect(quiet.stderr.split('lost connection to the database')).toHaveLength(2);
  }, 120_000);

  it('a provider that writes rows then crashes, leaving a child that holds its stdout: every row delivered, the child stopped', async () => {
    const t = taskFile(10);
    const fake = join(ROOT, 'test/fixtures/fake-provider.mjs');
    writeFileSync(t.config, readFileSync(t.config, 'utf8').replace('provider = "generator"', `provider_path = "${fake}"`).replace(/config \{\n      count = 10\n      rate = 0\n    \}/, 'config {}'));
    const pidFile = join(t.state, '..', 'child.pid');
    const r = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', t.config, '--quiet'], { env: { ...t.env, FAKE_MODE: 'crash-after-rows', FAKE_ROWS: '3000', FAKE_PID_FILE: pidFile }, timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(ExitCodes.FAILURE);
    expect(r.stderr).toContain(`dstream: input ${fake}: failed (exit code 1)\n--- last lines of its stderr ---\nlost connection to the database`);
    expect(rowsIn(t.out).map((e) => (e.data as { Id: number }).Id)).toEqual(Array.from({ length: 3000 }, (_, i) => i + 1));
    const pid = Number(readFileSync(pidFile, 'utf8'));
    const gone = await stopped(pid);
    if (!gone) process.kill(pid, 'SIGKILL');
    expect(gone, `pid ${pid} left running`).toBe(true);
  }, 120_000);

  it("the README's demo command works as written (after npm ci)", async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const first = /```sh\n(.+?)\s+#/.exec(readme)![1]!;
    expect(first.startsWith('npm ci && ')).toBe(true);
    const command = first.slice('npm ci && '.length);
    const state = tmp('dstream-readme-');
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const sh = spawn('bash', ['-c', command], { cwd: ROOT, env: { ...process.env, DSTREAM_STATE_DIR: state, DSTREAM_DEMO_OUT: join(state, 'out') } });
      let out = '';
      let err = '';
      sh.stdout.on('data', (d) => (out += d));
      sh.stderr.on('data', (d) => (err += d));
      sh.on('close', (c) => resolve({ code: c, stdout: out, stderr: err }));
    });
    expect(code, stderr).toBe(0);
    expect(stdout).toContain('3 of 3 files written');
    expect(stderr).toMatch(/task "demo": 1000 rows delivered/);
  }, 180_000);
  it('destroy with the source server unreachable: the output\'s files still go, the input\'s failure is reported, exit 1', async () => {
    const dir = tmp('dstream-cli-');
    const out = join(dir, 'out');
    const config = join(dir, 'dstream.hcl');
    // A port nobody listens on: the SQL Server is gone.
    const port = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    writeFileSync(
      config,
      `task "gone" {\n  input {\n    provider = "mssql-cdc"\n    config {\n      connection_string = "Server=127.0.0.1,${port};Database=shop;User Id=dstream;Password=x;Encrypt=false"\n      tables = ["Persons", "sales.Orders"]\n    }\n  }\n  output {\n    provider = "files"\n    config {\n      dir = "${out}"\n    }\n  }\n}\n`,
    );
    // What earlier runs wrote.
    mkdirSync(out);
    for (const f of ['Persons_cdc_events.ndjson', 'Orders_cdc_events.ndjson']) writeFileSync(join(out, f), '{"data":{}}\n');
    const destroyed = await spawnNode(DSTREAM_BIN, ['destroy', 'gone', '--config', config, '--yes'], { env: { DSTREAM_STATE_DIR: join(dir, 'state') } });
    expect(destroyed.code).toBe(ExitCodes.FAILURE);
    expect(readdirSync(out)).toEqual([]);
    expect(destroyed.stdout).toMatch(/^Task gone: 2 streams \(Persons, Orders\)\n  warning: input mssql-cdc: discover failed: could not connect to SQL Server at [^\n]*; destroy goes on with the tables the task file names\n/);
    expect(destroyed.stdout).toContain(`\nInput:\n  error: input mssql-cdc: destroy failed: could not connect to SQL Server at 127.0.0.1:${port}/shop: `);
    expect(destroyed.stdout).toContain(`  - destroy file ${join(out, 'Persons_cdc_events.ndjson')}\n  - destroy file ${join(out, 'Orders_cdc_events.ndjson')}\n`);
  }, 180_000);
});
