import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const DSTREAM_BIN = `${ROOT}dist/bin/dstream.js`;
export const fixture = (name: string) => `${ROOT}test/fixtures/${name}`;

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout split into lines and parsed; throws if any line is not JSON (stdout purity). */
  lines(): unknown[];
}

/** Spawns `node script args`, writes `input` to stdin (or leaves it open), and waits for exit. */
export function spawnNode(
  script: string,
  args: string[] = [],
  options: { input?: string | Buffer; env?: Record<string, string | undefined>; cwd?: string; keepStdinOpen?: boolean; timeoutMs?: number; onSpawn?: (c: ChildProcess) => void } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], {
      env: withoutUnset({ ...process.env, ...options.env }),
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(options.cwd ? { cwd: options.cwd } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin.on('error', () => {
      // The child may exit before reading all input (that is what some tests check).
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${script} ${args.join(' ')} did not exit within ${options.timeoutMs ?? 60_000} ms; stderr: ${stderr}`));
    }, options.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout,
        stderr,
        lines: () =>
          stdout
            .split('\n')
            .filter((l) => l.length > 0)
            .map((l) => JSON.parse(l) as unknown),
      });
    });
    options.onSpawn?.(child);
    if (options.input !== undefined) child.stdin.write(options.input);
    if (!options.keepStdinOpen) child.stdin.end();
  });
}

export const ndjson = (...values: unknown[]) => values.map((v) => `${JSON.stringify(v)}\n`).join('');

/** An env entry set to undefined is removed (a test that must run without DSTREAM_STATE_DIR, say). */
function withoutUnset(env: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined));
}

/** Whether a process is still running (a zombie, dead but not yet reaped by its parent, is not). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
  try {
    // Field 3 of /proc/<pid>/stat, after the parenthesised command name, is the state.
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    // No /proc (not Linux): process.kill answered, so it exists.
    return true;
  }
}

/** Waits until `pid` is no longer running, up to `ms`; returns whether it stopped. */
export async function stopped(pid: number, ms = 5_000): Promise<boolean> {
  const until = Date.now() + ms;
  while (alive(pid)) {
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}
