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
}

export interface ProviderHandle {
  readonly label: string;
  readonly stdin: Writable;
  readonly stdout: Readable;
  /** Resolves when the provider has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The last lines it wrote on stderr, for error messages. */
  stderrTail(): string;
  kill(signal?: NodeJS.Signals): void;
}

const TAIL_LINES = 20;

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
    for (const line of lines) {
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
      options.onStderr?.(line, spec.label);
    }
  };
  const stderrTail = () => [...tail, ...(partial ? [partial] : [])].join('\n');

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
    return { label: spec.label, stdin, stdout, exited, stderrTail, kill: (sig = 'SIGTERM') => void signals.emit(sig, sig) };
  }

  const path = spec.path!;
  const [command, args] = /\.(m?js|cjs)$/.test(path) ? [process.execPath, [path]] : [path, []];
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
  return { label: spec.label, stdin: child.stdin, stdout: child.stdout, exited, stderrTail, kill: (sig = 'SIGTERM') => void child.kill(sig) };
}
