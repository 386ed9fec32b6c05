/**
 * A running provider, whatever it is: a `provider_path` executable as a child process, or a
 * built-in provider run in this process through runProvider(). Both speak the same protocol, so
 * the executor treats them alike and one set of tests covers both; a built-in one speaks it in
 * objects (`objectMode`), without the JSON encode and decode that only a process boundary needs.
 */
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { PassThrough, Writable, type Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { runProvider, type ProviderDefinition } from '../provider/run-provider.js';
import type { MetricsLine } from '../protocol/messages.js';

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
  /** stdin and stdout carry protocol messages as objects (a built-in provider) rather than NDJSON bytes. */
  readonly objectMode: boolean;
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
  /**
   * A built-in provider speaks in objects instead of NDJSON bytes. For runs where both sides are
   * built in; with a process on the other side the bytes go through its decoder, limits included.
   */
  objectMode?: boolean;
  /** A built-in provider's metrics lines, straight to the executor (not through its stdout). */
  onMetrics?: (line: MetricsLine) => void;
}

/**
 * After a provider process has exited, how long what it started may keep its stdout or stderr open
 * before the rest of its process group is stopped: as long as a provider has to drain after
 * SIGTERM (runProvider's default grace), for a wrapper script that exits on SIGTERM while the
 * provider it started is still draining.
 */
const EXIT_GRACE_MS = 10_000;

/** A provider's stderr line is shown up to this many characters (binary garbage can be megabytes). */
const MAX_LINE = 1000;
/** A stderr "line" without a newline is cut into pieces of this size rather than held forever. */
const MAX_PARTIAL = 64 * 1024;

/** Printable, bounded: control characters (a terminal would obey them) become \uXXXX, long lines are cut. */
function shown(line: string): string {
  const clipped = line.length <= MAX_LINE ? line : `${line.slice(0, MAX_LINE)}... (${line.length - MAX_LINE} more characters)`;
  return clipped.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
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
    const objectMode = options.objectMode === true;
    const stdin = new PassThrough({ objectMode });
    const stdout = new PassThrough({ objectMode });
    const stderr = new PassThrough();
    stderr.on('data', onStderr);
    // SIGINT/SIGTERM ask for a drain, as they do to a process; SIGKILL ends it at once.
    const signals = new EventEmitter();
    const killed = new AbortController();
    const exited = runProvider(spec.builtin, { stdin, stdout, stderr, argv: [], env: options.env ?? process.env, signals, objectMode, kill: killed.signal, ...(options.onMetrics ? { onMetrics: options.onMetrics } : {}) }).then((code) => {
      if (!stdout.writableEnded) stdout.end();
      return killed.signal.aborted ? { code: null, signal: 'SIGKILL' as const } : { code, signal: null };
    });
    const kill = (sig: NodeJS.Signals = 'SIGTERM') => {
      if (sig === 'SIGINT' || sig === 'SIGTERM') signals.emit(sig, sig);
      else killed.abort();
    };
    return { label: spec.label, handshakeTimeoutMs: spec.handshakeTimeoutMs, objectMode, stdin: pipeEnd(stdin), stdout, exited, stderrTail, kill };
  }

  const path = spec.path!;
  const [command, args] = /\.(m?js|cjs)$/.test(path) ? [process.execPath, [path]] : [path, []];
  // Its own process group, so that stopping it stops whatever it started too (a wrapper script's
  // children, a helper it forked). dstream forwards SIGINT/SIGTERM itself (the executor stops its
  // providers), so a terminal's Ctrl-C reaching dstream's group alone loses nothing.
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: options.env ?? process.env, detached: true, ...(options.cwd ? { cwd: options.cwd } : {}) });
  child.stderr.on('data', onStderr);
  const group = (sig: NodeJS.Signals): boolean => {
    if (child.pid === undefined) return false;
    try {
      process.kill(-child.pid, sig);
      return true;
    } catch (err) {
      // ESRCH: nothing of the group is left. EPERM: a member changed its user; nothing more to do.
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH' && (err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
      return false;
    }
  };
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('error', (err) => {
      onStderr(`could not start ${path}: ${err.message}\n`);
      resolve({ code: 127, signal: null });
    });
    // Its own exit comes first; its stdout is read to the end before it counts as exited (its last
    // lines are rows), and only then is what it left behind in its group stopped. A process of the
    // group that holds the pipe open after the provider has gone gets EXIT_GRACE_MS to let go.
    let grace: NodeJS.Timeout | undefined;
    child.once('exit', () => {
      grace = setTimeout(() => group('SIGKILL'), EXIT_GRACE_MS);
    });
    child.once('close', (code, signal) => {
      clearTimeout(grace);
      group('SIGKILL');
      resolve({ code, signal });
    });
  });
  // A provider that exits without reading all its input must not crash dstream with EPIPE.
  child.stdin.on('error', () => undefined);
  const kill = (sig: NodeJS.Signals = 'SIGTERM') => {
    if (!group(sig) && child.exitCode === null && child.signalCode === null) child.kill(sig);
  };
  return { label: spec.label, handshakeTimeoutMs: spec.handshakeTimeoutMs, objectMode: false, stdin: child.stdin, stdout: child.stdout, exited, stderrTail, kill };
}

/**
 * The writing end of a built-in provider's stdin, as a pipe to a process is: when the writer fails
 * (the input on the other side of a run failing mid-stream destroys it), the provider sees its
 * input end, and the writer's error stays the writer's. Handed the error, a built-in output would
 * fail with the input's message and be blamed for it.
 */
function pipeEnd(stdin: PassThrough): Writable {
  return new Writable({
    objectMode: stdin.writableObjectMode,
    highWaterMark: stdin.writableHighWaterMark,
    write(chunk: unknown, encoding, done) {
      if (stdin.write(chunk, encoding)) done();
      else stdin.once('drain', () => done());
    },
    final(done) {
      stdin.end(done);
    },
    destroy(err, done) {
      if (!stdin.writableEnded && !stdin.destroyed) stdin.end();
      done(err);
    },
  });
}
