/** Output for people and scripts (issue 13, point 8). */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCodes } from '../../lib/index.js';
import { DSTREAM_BIN, spawnNode } from '../support/process.js';

function project(count: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'dstream-output-'));
  const config = join(dir, 'dstream.hcl');
  writeFileSync(config, `task "demo" {\n  input {\n    provider = "generator"\n    config {\n${count}    }\n  }\n  output {\n    provider = "files"\n    config { dir = "out" }\n  }\n}\n`);
  return config;
}
const dstream = (args: string[], env: Record<string, string | undefined> = {}) => spawnNode(DSTREAM_BIN, args, { timeoutMs: 90_000, env: { DSTREAM_STATE_DIR: undefined, ...env } });
const ESC = '\u001b[';

describe('dstream output', () => {
  it('plan --detailed-exitcode: 2 with changes, 0 without, 1 on an error', async () => {
    const config = project('      count = 30\n');
    expect((await dstream(['plan', 'demo', '--config', config, '--detailed-exitcode'])).code).toBe(2);
    expect((await dstream(['init', 'demo', '--config', config])).code).toBe(0);
    const same = await dstream(['plan', 'demo', '--config', config, '--detailed-exitcode']);
    expect(same.code).toBe(0);
    expect(same.stdout).toContain('= unchanged file');
    expect(same.stdout).not.toContain(ESC);
    expect((await dstream(['plan', 'nope', '--config', config, '--detailed-exitcode'])).code).toBe(ExitCodes.FAILURE);
  }, 180_000);

  it('run --json: one summary object with duration and stop reason; status in human units', async () => {
    const config = project('      count = 30\n');
    const run = await dstream(['run', 'demo', '--config', config, '--json', '--quiet']);
    expect(run.code).toBe(0);
    expect(run.stderr).toBe('');
    const summary = JSON.parse(run.stdout);
    expect(summary).toMatchObject({ task: 'demo', rows: 30, stoppedBy: null, stopReason: 'input ended' });
    expect(summary.durationMs).toBeGreaterThan(0);
    const status = await dstream(['status', 'demo', '--config', config]);
    expect(status.stdout).toMatch(/ok file .*Persons_cdc_events\.ndjson {2}\(size \d+(\.\d)? (B|KiB)\)/);
    expect(status.stdout).not.toContain('sizeInBytes');
  }, 180_000);

  it('colour on a terminal only, and never with NO_COLOR', async (ctx) => {
    if (spawnSync('script', ['--version']).status !== 0) ctx.skip('no `script` command here to give dstream a terminal');
    const config = project('      count = 30\n');
    const onTty = (env: Record<string, string>) =>
      spawnSync('script', ['-qec', `"${process.execPath}" "${DSTREAM_BIN}" plan demo --config "${config}"`, '/dev/null'], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 90_000 });
    const colour = onTty({});
    expect(colour.stdout).toContain(`${ESC}32m+ create${ESC}0m file`);
    const none = onTty({ NO_COLOR: '1' });
    expect(none.stdout).toContain('+ create file');
    expect(none.stdout).not.toContain(ESC);
  }, 180_000);

  it('a generator without count warns that it runs until stopped; count = 0 says so on purpose, quietly', async () => {
    for (const [count, warns] of [['', true], ['      count = 0\n', false]] as const) {
      const config = project(count);
      const r = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', config], {
        timeoutMs: 90_000,
        env: { DSTREAM_STATE_DIR: undefined },
        keepStdinOpen: true,
        onSpawn: (child) => {
          let err = '';
          let stopped = false;
          // Stopped once it is surely streaming: its first progress line (one signal: a second one means "now").
          child.stderr!.on('data', (d) => {
            err += d;
            if (!stopped && /rows \(\d+ rows\/s\)/.test(err)) {
              stopped = true;
              child.kill('SIGTERM');
            }
          });
        },
      });
      expect(r.code).toBe(ExitCodes.TERMINATED);
      expect(r.stderr.includes('generator: no count: generating until stopped'), count).toBe(warns);
    }
  }, 180_000);
});
