/**
 * A running provider, whatever it is: a `provider_path` executable as a child process, or a
 * built-in provider run in this process through runProvider() over in-memory pipes. Both speak the
 * same protocol over the same byte streams, so the executor treats them alike and one set of
 * tests covers both.
 */
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { runProvider, type ProviderDefinition } from '../provider/run-provider.js';

export interface ProviderSpec {
  /** For messages: `input generator`, `output ./bin/asb-sink`. */
  label: string;
  path?: string;
  builtin?: ProviderDefinition<never>;
  /** This provider's own handshake timeout (task file: handshake_timeout). */
  handshakeTimeoutMs?: number;
}

export interface ProviderHandle {
  readonly label: string;
  readonly handshakeTimeoutMs?: number;
  readonly stdin: Writable;
  readonly stdout: Readable;
  /** Resolves when the provider has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The last lines it wrote on stderr, for error messages. */
  stderrTail(): string;
  kill(signal?: NodeJS.Signals): void;
}

const TAIL_LINES = 20;
/** A provider's stderr line is shown up to this many characters (binary garbage can be megabytes). */
const MAX_LINE = 1000;
/** A stderr "line" without a newline is cut into pieces of this size rather than held forever. */
const MAX_PARTIAL = 64 * 1024;

/** Printable, bounded: control characters (a terminal would obey them) become \uXXXX, long lines are cut. */
function shown(line: string): string {
  const clipped = line.length <= MAX_LINE ? line : `${line.slice(0, MAX_LINE)}... (${line.length - MAX_LINE} more characters)`;
  return clipped.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export interface StartOptions {
  /** Each stderr line, as it comes (the CLI prefixes and prints them). */
  onStderr?: (line: string, label: string) => void;
  env?: Record<string, string | undefined>;
  /** Working directory of provider executables (the task file's directory). */
  cwd?: string;
}

export function startProvider(spec: ProviderSpec, options: StartOptions = {}): ProviderHandle {
  const tail: string[] = [];
  const decoder = new StringDecoder('utf8');
  let partial = '';
  const onStderr = (chunk: Buffer | string) => {
    const lines = (partial + (typeof chunk === 'string' ? chunk : decoder.write(chunk))).split('\n');
    partial = lines.pop()!;
    if (partial.length > MAX_PARTIAL) {
      lines.push(partial);
      partial = '';
    }
    for (const raw of lines) {
      const line = shown(raw);
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
      options.onStderr?.(line, spec.label);
    }
  };
  const stderrTail = () => [...tail, ...(partial ? [shown(partial)] : [])].join('\n');

  if (spec.builtin !== undefined) {
    const stdin = new PassThrough();
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    stderr.on('data', onStderr);
    const signals = new EventEmitter();
    const exited = runProvider(spec.builtin, { stdin, stdout, stderr, argv: [], env: options.env ?? process.env, signals }).then((code) => {
      stdout.end();
      return { code, signal: null };
    });
    return { label: spec.label, handshakeTimeoutMs: spec.handshakeTimeoutMs, stdin, stdout, exited, stderrTail, kill: (sig = 'SIGTERM') => void signals.emit(sig, sig) };
  }

  const path = spec.path!;
  const [command, args] = /\.(m?js|cjs)$/.test(path) ? [process.execPath, [path]] : [path, []];
  // Not in a process group of its own yet: with detached: true a provider crashing right after its
  // last rows lost them before the output acknowledged them (tasks.test "provider crash"), a
  // difference not understood yet. kill() still tries the group first, for when it is.
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: options.env ?? process.env, ...(options.cwd ? { cwd: options.cwd } : {}) });
  child.stderr.on('data', onStderr);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('error', (err) => {
      onStderr(`could not start ${path}: ${err.message}\n`);
      resolve({ code: 127, signal: null });
    });
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  // A provider that exits without reading all its input must not crash dstream with EPIPE.
  child.stdin.on('error', () => undefined);
  let closed = false;
  void exited.then(() => (closed = true));
  const kill = (sig: NodeJS.Signals = 'SIGTERM') => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, sig);
    } catch (err) {
      // The group is gone (ESRCH): the provider and everything it started have exited.
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
      if (!closed) child.kill(sig);
    }
  };
  return { label: spec.label, handshakeTimeoutMs: spec.handshakeTimeoutMs, stdin: child.stdin, stdout: child.stdout, exited, stderrTail, kill };
}
