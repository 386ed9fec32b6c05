/** Helpers of the compatibility suite: a task file in a fresh directory, the real CLI on it. */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DSTREAM_BIN, ROOT, spawnNode } from '../support/process.js';

export const compatFixture = (name: string) => `${ROOT}test/compat/fixtures/${name}`;

/** A task file in a fresh directory; returns its path and a state dir for the environment. */
export function taskFile(text: string): { config: string; dir: string; env: Record<string, string> } {
  const dir = mkdtempSync(join(tmpdir(), 'dstream-compat-'));
  const config = join(dir, 'dstream.hcl');
  writeFileSync(config, text);
  return { config, dir, env: { DSTREAM_STATE_DIR: join(dir, 'state') } };
}

export const dstream = (args: string[], t: { config: string; env: Record<string, string> }, env: Record<string, string> = {}, timeoutMs = 25_000, onSpawn?: (c: ChildProcess) => void) =>
  spawnNode(DSTREAM_BIN, [...args, '--config', t.config], { env: { ...t.env, ...env }, timeoutMs, ...(onSpawn ? { onSpawn } : {}) });


/** For `dstream(..., onSpawn)`: SIGTERM to the CLI once its stderr matches (the Go ingester polls forever). */
export const sigtermOnStderr = (pattern: RegExp) => (child: ChildProcess) => {
  let seen = '';
  let sent = false;
  child.stderr!.on('data', (d: Buffer) => {
    seen += d.toString();
    // Once: a second SIGTERM after the run has ended would kill the CLI instead of stopping the task.
    if (!sent && pattern.test(seen)) {
      sent = true;
      child.kill('SIGTERM');
    }
  });
};
