/** Log lines for people (text) and for collectors (--log-format json), without secrets (issue 15, point 3). */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCodes } from '../../lib/index.js';
import { DSTREAM_BIN, fixture, ROOT, spawnNode } from '../support/process.js';

const PASSWORD = 'Hunter2Secret';
const KEY = 'c2VjcmV0LWtleS1ub3QtdG8tbG9n';
const CS = `Server=db.example,1433;Database=app;User Id=sa;Password=${PASSWORD};Encrypt=true`;

/** A task whose input logs and fails quoting its connection string (a secret from the environment). */
function leakyTask(): string {
  const dir = mkdtempSync(join(tmpdir(), 'dstream-logs-'));
  const config = join(dir, 'dstream.hcl');
  writeFileSync(config, `task "leak" {\n  input {\n    provider_path = "${fixture('leaky-provider.mjs')}"\n    config {\n      connection_string = "{{ env "LEAKY_CS" }}"\n    }\n  }\n  output {\n    provider = "files"\n    config { dir = "out" }\n  }\n}\n`);
  return config;
}

interface Record {
  time: string;
  level: string;
  task: string | null;
  provider: string | null;
  message: string;
  code?: string;
}

/** Every stderr line as a JSON record (fails on a line that is not one). */
function records(stderr: string): Record[] {
  return stderr
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => {
      const r = JSON.parse(l) as Record;
      expect(Object.keys(r).slice(0, 5), l).toEqual(['time', 'level', 'task', 'provider', 'message']);
      expect(Number.isNaN(Date.parse(r.time))).toBe(false);
      expect(['debug', 'info', 'warn', 'error']).toContain(r.level);
      return r;
    });
}

describe('dstream logs', () => {
  it('--log-format json: every stderr line a JSON record with task and provider; a failing provider named, its code kept; no secret', async () => {
    const config = leakyTask();
    const r = await spawnNode(DSTREAM_BIN, ['run', 'leak', '--config', config, '--log-format', 'json'], { env: { LEAKY_CS: CS }, timeoutMs: 60_000 });
    expect(r.code).toBe(ExitCodes.FAILURE);
    expect(r.stderr + r.stdout).not.toContain(PASSWORD);
    const all = records(r.stderr);
    for (const rec of all) expect(rec.task).toBe('leak');
    const own = all.filter((rec) => rec.provider === 'leaky-provider.mjs');
    // Its lines, then dstream's error naming it (once: the output it was feeding is not blamed).
    expect(own.map((rec) => [rec.level, rec.message])).toEqual([
      ['info', 'connecting with ***'],
      ['warn', 'retrying ***'],
      ['error', expect.stringContaining('leaky-provider.mjs: login failed for ')],
    ]);
    expect(all.filter((rec) => rec.level === 'error')).toHaveLength(1);
    const last = all.at(-1)!;
    expect(last).toMatchObject({ level: 'error', code: 'DSTREAM_ERR_PROVIDER', provider: 'leaky-provider.mjs' });
    expect(last.message).toContain('leaky-provider.mjs: login failed for ');
  }, 60_000);

  it('--log-format json --quiet: the failing provider\'s last stderr lines are structured data, its JSON records as objects, not text in the message', async () => {
    const config = leakyTask();
    const r = await spawnNode(DSTREAM_BIN, ['run', 'leak', '--config', config, '--log-format', 'json', '--quiet'], { env: { LEAKY_CS: CS }, timeoutMs: 60_000 });
    expect(r.code).toBe(ExitCodes.FAILURE);
    expect(r.stderr).not.toContain(PASSWORD);
    const last = records(r.stderr).at(-1)! as Record & { stderr?: unknown };
    expect(last).toMatchObject({ level: 'error', code: 'DSTREAM_ERR_PROVIDER', provider: 'leaky-provider.mjs' });
    expect(last.message).toMatch(/leaky-provider\.mjs: login failed for \*\*\* \(exit code 1\)$/);
    expect(last.stderr).toEqual(['connecting with ***', { level: 'warn', message: 'retrying ***' }]);
    // --json: the error object on stdout carries them the same way, with the error's own code.
    const json = await spawnNode(DSTREAM_BIN, ['run', 'leak', '--config', config, '--quiet', '--json'], { env: { LEAKY_CS: CS }, timeoutMs: 60_000 });
    expect(json.lines()).toEqual([{ error: expect.objectContaining({ code: 'DSTREAM_ERR_PROVIDER', exitCode: 1, message: last.message, stderr: last.stderr }) }]);
    // The text form keeps the tail readable, under a heading.
    const text = await spawnNode(DSTREAM_BIN, ['run', 'leak', '--config', config, '--quiet'], { env: { LEAKY_CS: CS }, timeoutMs: 60_000 });
    expect(text.stderr).toMatch(/: login failed for \*\*\* \(exit code 1\)\n--- last lines of its stderr ---\nconnecting with \*\*\*\n\{"level":"warn","message":"retrying \*\*\*"\}\n$/);
  }, 60_000);

  it('text (the default, or DSTREAM_LOG_FORMAT=text): lines under their names, no secret either', async () => {
    const config = leakyTask();
    const r = await spawnNode(DSTREAM_BIN, ['run', 'leak', '--config', config], { env: { LEAKY_CS: CS, DSTREAM_LOG_FORMAT: 'text' }, timeoutMs: 60_000 });
    expect(r.code).toBe(ExitCodes.FAILURE);
    expect(r.stderr + r.stdout).not.toContain(PASSWORD);
    expect(r.stderr).toContain('leaky-provider.mjs: connecting with ***\n');
    expect(r.stderr).toMatch(/^dstream: .*login failed for /m);
    for (const line of r.stderr.trim().split('\n')) expect(line.startsWith('{'), line).toBe(false);
  }, 60_000);

  it('DSTREAM_LOG_FORMAT=json: a whole run in JSON, progress and summary included', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-logs-'));
    const config = join(dir, 'dstream.hcl');
    writeFileSync(config, 'task "demo" {\n  input {\n    provider = "generator"\n    config {\n      count = 20\n      rate = 0\n    }\n  }\n  output {\n    provider = "files"\n    config { dir = "out" }\n  }\n}\n');
    const r = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', config], { env: { DSTREAM_LOG_FORMAT: 'json' }, timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    const all = records(r.stderr);
    for (const rec of all) expect(rec.task).toBe('demo');
    expect(all.at(-1)!.message).toMatch(/^task "demo": 20 rows delivered/);
    // What reset and destroy list before removing is a record too.
    for (const verb of ['reset', 'destroy']) {
      const v = await spawnNode(DSTREAM_BIN, [verb, 'demo', '--config', config, '--yes'], { env: { DSTREAM_LOG_FORMAT: 'json' }, timeoutMs: 60_000 });
      expect(v.code, v.stderr).toBe(0);
      expect(records(v.stderr).map((rec) => rec.message)).toContainEqual(expect.stringMatching(new RegExp(`^${verb} task "demo" removes: `)));
    }
  }, 60_000);

  it('usage errors come in the chosen format too; a format that is not one is an argument error (exit 2)', async () => {
    const usage = await spawnNode(DSTREAM_BIN, ['run', '--log-format', 'json']);
    expect(usage.code).toBe(ExitCodes.USAGE);
    expect(records(usage.stderr)).toEqual([expect.objectContaining({ level: 'error', code: 'DSTREAM_ERR_INVALID_OPTION', task: null, provider: null })]);
    const bad = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--log-format', 'xml']);
    expect(bad.code).toBe(ExitCodes.USAGE);
    expect(bad.stderr).toBe('dstream: --log-format must be one of text, json; got "xml"\n');
  });

  it('standalone asb-sink and mssql-cdc: --log-format json, records named by the provider, no connection secret', async () => {
    const asb = await spawnNode(join(ROOT, 'dist/bin/asb-sink.js'), ['--log-format', 'json', '--connection-string', `Endpont=sb://x.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=${KEY}`], { input: '' });
    expect(asb.code).toBe(ExitCodes.USAGE);
    expect(asb.stderr).not.toContain(KEY);
    const a = records(asb.stderr);
    expect(a.length).toBeGreaterThan(0);
    for (const rec of a) expect(rec).toMatchObject({ provider: 'asb-sink', task: null });
    expect(a.at(-1)).toMatchObject({ level: 'error', code: expect.stringMatching(/^DSTREAM_ERR_/) });
    const cdc = await spawnNode(join(ROOT, 'dist/bin/mssql-cdc.js'), ['--log-format=json', '--connection-string', CS, '--tables', 'Persons', '--poll-interval-ms', '-5'], { input: '' });
    expect(cdc.code).toBe(ExitCodes.USAGE);
    expect(cdc.stderr).not.toContain(PASSWORD);
    for (const rec of records(cdc.stderr)) expect(rec).toMatchObject({ provider: 'mssql-cdc' });
    const text = await spawnNode(join(ROOT, 'dist/bin/asb-sink.js'), ['--connection-string', `Endpont=sb://x/;SharedAccessKey=${KEY}`], { input: '' });
    expect(text.stderr).toMatch(/^asb-sink: /);
    expect(text.stderr).not.toContain(KEY);
  });
});
