/** What dstream says when a provider misbehaves (issue 13, point 6): once, short, named, flushed. */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCodes } from '../../lib/index.js';
import { DSTREAM_BIN, fixture, spawnNode, stopped } from '../support/process.js';
import { startSqlServer } from '../support/sql-server.js';

function task(extra = ''): { dir: string; config: string } {
  const dir = mkdtempSync(join(tmpdir(), 'dstream-messages-'));
  const config = join(dir, 'dstream.hcl');
  writeFileSync(config, `task "demo" {\n  input {\n    provider_path = "${fixture('garbage-provider.mjs')}"\n${extra}  }\n  output { provider = "files" }\n}\n`);
  return { dir, config };
}

describe('provider trouble, said once and briefly', () => {
  it('garbage on stdout: the message names the provider, quotes a short excerpt, and suggests no option run lacks', async () => {
    const t = task();
    const r = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', t.config, '--quiet'], { env: { GARBAGE_MODE: 'stdout' }, timeoutMs: 60_000 });
    expect(r.code).toBe(ExitCodes.FAILURE);
    expect(r.stderr).toMatch(new RegExp(`^dstream: input ${fixture('garbage-provider.mjs')}: wrote line 1 on stdout that is not a protocol line \\((not JSON|not valid UTF-8 \\(byte \\d+ of the line\\))\\), starting ".{1,400}"\\.\\.\\.; a provider writes only protocol JSON on stdout`, 'm'));
    expect(r.stderr).not.toContain('--on-invalid');
    expect(r.stderr.length).toBeLessThan(2000);
  }, 60_000);

  it('a row that is not valid UTF-8: the message names the provider and the line', async () => {
    const t = task();
    const r = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', t.config, '--quiet'], { env: { GARBAGE_MODE: 'utf8' }, timeoutMs: 60_000 });
    expect(r.code).toBe(ExitCodes.FAILURE);
    expect(r.stderr).toMatch(new RegExp(`^dstream: input ${fixture('garbage-provider.mjs')}: wrote line 3 on stdout that is not a protocol line \\(not valid UTF-8 \\(byte 46 of the line\\)\\), starting "`, 'm'));
  }, 60_000);

  it('a provider error is said once, shown live or (--quiet) in the error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-messages-'));
    const config = join(dir, 'dstream.hcl');
    writeFileSync(config, `task "demo" {\n  input {\n    provider = "generator"\n    config { count = 1 }\n  }\n  output {\n    provider_path = "${fixture('echo-provider.mjs')}"\n    config { fail_on = "init" }\n  }\n}\n`);
    for (const quiet of [[], ['--quiet']]) {
      const r = await spawnNode(DSTREAM_BIN, ['init', 'demo', '--config', config, ...quiet], { timeoutMs: 60_000 });
      expect(r.code).toBe(ExitCodes.FAILURE);
      expect(r.stderr.split('namespace sb-test unreachable'), r.stderr).toHaveLength(2);
      expect(r.stderr).toMatch(/^dstream: output .*echo-provider\.mjs: init failed/m);
    }
  }, 120_000);

  it('an input failing mid-run, both sides built in: the error names the input, once, and the output is not blamed', async () => {
    const sql = await startSqlServer();
    try {
      const dir = mkdtempSync(join(tmpdir(), 'dstream-messages-'));
      const config = join(dir, 'dstream.hcl');
      const cs = sql.connectionStringFor({ password: 'Wr0ng-Passw0rd' });
      writeFileSync(config, `task "demo" {\n  input {\n    provider = "mssql-cdc"\n    config {\n      connection_string = "${cs}"\n      tables = ["Persons"]\n      connect_attempts = 1\n    }\n  }\n  output {\n    provider = "files"\n    config { dir = "out" }\n  }\n}\n`);
      for (const quiet of [[], ['--quiet']]) {
        const r = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', config, ...quiet], { env: { DSTREAM_STATE_DIR: join(dir, 'state') }, timeoutMs: 60_000 });
        expect(r.code, r.stderr).toBe(ExitCodes.FAILURE);
        // Shown live under the input's name, then named by the final line; or (--quiet) in it.
        if (quiet.length > 0) expect(r.stderr).toMatch(/^dstream: input mssql-cdc: .*[Ll]ogin failed/m);
        else expect(r.stderr.trimEnd().split('\n').at(-1)).toMatch(/^dstream: input mssql-cdc\b.*its message is above$/);
        expect(r.stderr, r.stderr).not.toMatch(/output files|^files: /m);
        expect(r.stderr.split(/[Ll]ogin failed/), r.stderr).toHaveLength(2);
      }
    } finally {
      await sql.close();
    }
  }, 120_000);

  it('100 KB of garbage on stderr through a pipe: bounded, and the last line (the error) arrives', async () => {
    const t = task();
    const { code, out } = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const sh = spawn('bash', ['-o', 'pipefail', '-c', `"${process.execPath}" "${DSTREAM_BIN}" run demo --config "${t.config}" 2>&1 | cat`], { env: { ...process.env, GARBAGE_MODE: 'stderr' } });
      let text = '';
      sh.stdout.on('data', (d) => (text += d));
      sh.on('close', (c) => resolve({ code: c, out: text }));
    });
    expect(code).toBe(ExitCodes.FAILURE);
    const lines = out.trimEnd().split('\n');
    expect(lines.at(-1)).toMatch(new RegExp(`^dstream: input ${fixture('garbage-provider.mjs')}: exited before its handshake \\(exit code 1\\)$`));
    // Each line shown at most 1000 characters (plus escapes), no raw control characters.
    for (const l of lines) expect(l.length).toBeLessThan(7000);
    expect(out).not.toMatch(/[\u0000-\u0008\u000b-\u001f]/);
  }, 60_000);

  it('a provider that never hands-shakes is stopped after its own handshake_timeout, with the child it started', async () => {
    const t = task('    handshake_timeout = "2s"\n');
    const pidFile = join(t.dir, 'child.pid');
    const r = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', t.config, '--quiet'], { env: { GARBAGE_MODE: 'hang', GARBAGE_PID_FILE: pidFile }, timeoutMs: 60_000 });
    expect(r.code).toBe(ExitCodes.FAILURE);
    expect(r.stderr).toContain(': no handshake within 2000 ms (stopped; handshake_timeout in its block allows it longer)');
    // The child (holding the provider's stdout and stderr) went with its process group.
    const pid = Number(readFileSync(pidFile, 'utf8'));
    const gone = await stopped(pid);
    if (!gone) process.kill(pid, 'SIGKILL');
    expect(gone, `pid ${pid} left running`).toBe(true);
  }, 60_000);
});
