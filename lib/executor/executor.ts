/**
 * Task-level operations: lifecycle verbs (discover from the input feeds the output's
 * plan/init/status/destroy) and run (input data -> output, acknowledged checkpoints -> state
 * store). Providers are handles (provider-handle.ts), so built-ins and executables behave alike.
 */
import { finished, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { encodeEnvelopes } from '../envelope/encode.js';
import { CHECKPOINT_TYPE, type CheckpointEnvelope } from '../envelope/types.js';
import { DstreamError, ErrorCodes, isDstreamError, messageOf } from '../errors.js';
import type { TaskConfig, ProviderRef } from '../config/tasks.js';
import { fromOriginalResult, isOriginalResult, streamsFromConfig } from '../protocol/original.js';
import { header, isMetricsLine, PROTOCOL_VERSION, readHandshake, type CommandHeader, type LifecycleVerb, type MetricsLine, type ResultLine, type StreamDescriptor } from '../protocol/messages.js';
import { builtinNamed, type BuiltinProvider } from '../providers/builtins.js';
import { startProvider, type ProviderHandle, type ProviderSpec, type StartOptions } from './provider-handle.js';
import { latestSaver } from '../state/latest-saver.js';
import { namedError, openSession, providerFailed, type Session } from './session.js';
import type { StateStore } from '../state/state-store.js';
import { RunTelemetry, type RunMetricsOptions } from './telemetry.js';

export interface ExecutorOptions extends StartOptions {
  builtins: Record<string, BuiltinProvider>;
  handshakeTimeoutMs?: number;
  /** Lifecycle verbs: how long an input executable has for its handshake (default PROBE_TIMEOUT_MS). */
  probeTimeoutMs?: number;
  /** Notes for the user (an input that was not asked, positions that are not stored). */
  onNote?: (note: string) => void;
}

export async function specOf(side: 'input' | 'output', ref: ProviderRef, builtins: ExecutorOptions['builtins']): Promise<ProviderSpec> {
  if (ref.provider !== undefined) {
    const builtin = await builtinNamed(builtins, ref.provider);
    if (builtin === undefined) {
      throw new DstreamError(ErrorCodes.CONFIG, `${side} provider "${ref.provider}" is not built in; built-in providers: ${Object.keys(builtins).join(', ')} (or use provider_path)`);
    }
    return { label: `${side} ${ref.provider}`, builtin, handshakeTimeoutMs: ref.handshakeTimeoutMs };
  }
  return { label: `${side} ${ref.providerPath}`, path: ref.providerPath!, handshakeTimeoutMs: ref.handshakeTimeoutMs };
}

/** How long an input may take to answer its handshake before it is taken for an original provider. */
export const PROBE_TIMEOUT_MS = 5_000;

/**
 * Runs one lifecycle verb on one provider and returns its result line; a failure throws. Results
 * of the original .NET SDK (`"status":"Success"|"Failed"`) are read as ok and error.
 *
 * With `probe` (inputs; the verb the user ran, for the note), stdin stays open until the handshake, and a provider that does not declare
 * dstream's protocol in it is stopped there and `undefined` comes back: an original input routes
 * every verb it does not know to run and would start streaming (the .NET SDK), or waits for the
 * end of its input and then streams (the Go ingester), so it must never get past its handshake.
 */
export async function providerVerb(spec: ProviderSpec, h: CommandHeader, options: ExecutorOptions, probe: LifecycleVerb | false = false): Promise<ResultLine | undefined> {
  const probeMs = options.probeTimeoutMs ?? PROBE_TIMEOUT_MS;
  const handle = startProvider(spec, options);
  return withHandle(handle, async () => {
    const session = await openSession(handle, h, probe ? { handshakeTimeoutMs: probeMs, silenceIsOriginal: true } : { ...options, endInput: true });
    if (probe) {
      if (!session.dstream) {
        // The wait the session gave it: the provider's own handshake_timeout, else the probe's.
        const waited = handle.handshakeTimeoutMs ?? probeMs;
        const why = session.silent
          ? `sent no handshake within ${waited} ms (the original MSSQL ingester reads its config to the end of its input first)`
          : session.legacy
            ? 'started with data instead of a handshake'
            : 'answered a handshake without "protocol" (as the original .NET SDK does)';
        const fix = session.silent ? `; if it is a dstream provider that is slow to start, give it longer with handshake_timeout = "30s" in its ${spec.label.split(' ')[0]} block` : '';
        options.onNote?.(`${handle.label} ${why}: taken for a provider of the original dstream and stopped; it is not asked to ${probe === h.command ? probe : `${h.command} or ${probe}`}, as the original CLI never asked inputs${fix}`);
        handle.kill('SIGKILL');
        await handle.exited;
        return undefined;
      }
      handle.stdin.end();
    }
    const next = await session.lines.next();
    if (next.done) throw providerFailed(handle, `gave no answer to "${h.command}"`, await handle.exited);
    const result = (isOriginalResult(next.value) ? fromOriginalResult(next.value, h.command) : next.value) as ResultLine;
    // Anything else first is data: a provider streaming instead of answering is stopped, not waited for.
    if (result?.status !== 'ok' && result?.status !== 'error') handle.kill('SIGKILL');
    const exit = await handle.exited;
    if (result?.status === 'error') throw providerFailed(handle, `${h.command} failed: ${result.message ?? 'no message'}`, exit, typeof result.code === 'string' ? result.code : undefined);
    if (result?.status !== 'ok') throw providerFailed(handle, `answered "${h.command}" with something that is not a result line`, exit);
    if (exit.code !== 0) throw providerFailed(handle, `${h.command} answered ok but exited non-zero`, exit);
    return result;
  });
}

async function withHandle<T>(handle: ProviderHandle, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    handle.kill('SIGKILL');
    throw err;
  }
}

export interface LifecycleReport {
  task: string;
  command: LifecycleVerb;
  streams: StreamDescriptor[];
  input?: ResultLine;
  output: ResultLine;
  /** What status or destroy went on without (an input that failed discover): why, and what was used instead. */
  warnings?: string[];
}

/**
 * `discover` on the input, then the verb on the input (when it supports it: an input may own
 * setup too, such as CDC on the source tables) and on the output. destroy runs the output first,
 * the reverse of init. `position` (the stored one) goes to the input's status, for its lag.
 * An input that does not speak dstream's protocol is asked nothing (as the original CLI did): the
 * streams then come from the `tables` of the output's config, or of the input's.
 *
 * status and destroy are what a user turns to when the source is broken or gone (a table dropped,
 * CDC turned off, the server unreachable): a failed discover is a warning there, the streams come
 * from the task file's `tables`, and the input's own failure becomes its error result, so the
 * output still reports, or removes, what it knows to be the task's.
 */
export async function taskVerb(task: TaskConfig, command: LifecycleVerb, options: ExecutorOptions & { position?: unknown }): Promise<LifecycleReport> {
  const input = await specOf('input', task.input, options.builtins);
  const output = await specOf('output', task.output, options.builtins);
  const without = command === 'status' || command === 'destroy';
  const warnings: string[] = [];
  // Built-ins speak the protocol; only executables are probed at their handshake.
  const discovered = await providerVerb(input, header('discover', task.input.config, { task: task.name }), options, input.builtin === undefined && command).catch((err: unknown): null => {
    if (!without) throw err;
    warnings.push(`${said(input, err)}; ${command} goes on with the tables the task file names`);
    return null;
  });
  const original = discovered === undefined;
  const streams = discovered === undefined || discovered === null ? streamsFromConfig(task.output.config, task.input.config) : ((discovered.streams as StreamDescriptor[] | undefined) ?? []);
  const onInput = async (): Promise<ResultLine | undefined> => {
    if (command === 'discover' || original) return undefined;
    const extra = command === 'status' && options.position !== undefined ? { task: task.name, state: options.position } : { task: task.name };
    // Optional for inputs: its stderr goes only into the error (which names it), not to the screen.
    return providerVerb(input, header(command, task.input.config, extra), { ...options, onStderr: undefined }).catch((err: DstreamError): ResultLine | undefined => {
      // An input without setup of its own may not support the verb; that is not a failure.
      if (err.details?.providerCode === ErrorCodes.UNSUPPORTED_COMMAND) return undefined;
      if (!without) throw err;
      return { status: 'error', command, message: said(input, err), ...(isDstreamError(err) ? { code: err.code } : {}) };
    });
  };
  const onOutput = async () => (await providerVerb(output, header(command, task.output.config, { task: task.name, streams }), options))!;
  let inputResult: ResultLine | undefined;
  let out: ResultLine;
  if (command === 'destroy') {
    out = await onOutput();
    inputResult = await onInput();
  } else {
    inputResult = await onInput();
    out = await onOutput();
  }
  return { task: task.name, command, streams, ...(inputResult ? { input: inputResult } : {}), output: out, ...(warnings.length > 0 ? { warnings } : {}) };
}

/** A provider's failure in one line that names it (its stderr tail, shown live already, left out). */
function said(spec: ProviderSpec, err: unknown): string {
  const head = messageOf(err).split('\n')[0]!;
  return head.startsWith(`${spec.label}: `) ? head : `${spec.label}: ${head}`;
}

export interface RunSummary {
  task: string;
  rows: number;
  checkpointsAcked: number;
  lastPosition?: unknown;
  stoppedBy?: NodeJS.Signals;
  /** Why no position is stored at all (an output of the original dstream never acknowledges). */
  positionsNotStored?: string;
}

export interface RunOptions extends ExecutorOptions {
  store: StateStore;
  /** Stops the run: the input is asked to stop, the output drains, the last acknowledgement is stored. */
  signal?: AbortSignal;
  onAck?: (checkpoint: CheckpointEnvelope, rows: number) => void;
  /** Serve /metrics, /healthz and /readyz while the task runs (the providers report theirs over the protocol). */
  metrics?: RunMetricsOptions;
}

/**
 * Least time between the starts of two saves of a run's position. Each save fsyncs a file and its
 * directory; back to back they compete with the output's own fsyncs all run long. A crash loses at
 * most this much more of the acknowledged progress, which is read again (at least once).
 */
export const SAVE_INTERVAL_MS = 200;

/** Streams a task until its input ends or `signal` aborts; stores each acknowledged checkpoint. */
export async function runTask(task: TaskConfig, options: RunOptions): Promise<RunSummary> {
  const telemetry = options.metrics === undefined ? undefined : await RunTelemetry.start(options.metrics);
  try {
    return await runWith(task, options, telemetry);
  } finally {
    await telemetry?.close();
  }
}

async function runWith(task: TaskConfig, options: RunOptions, telemetry: RunTelemetry | undefined): Promise<RunSummary> {
  const stored = await options.store.load(task.name);
  const inSpec = await specOf('input', task.input, options.builtins);
  const outSpec = await specOf('output', task.output, options.builtins);
  // Config keys also at the top level: a provider of the older dstream reads its first line as config.
  const runHeader = (ref: ProviderRef, extra: Partial<CommandHeader>): CommandHeader => ({
    ...ref.config,
    command: 'run',
    config: ref.config,
    protocol: PROTOCOL_VERSION,
    task: task.name,
    ...(telemetry ? { metrics: telemetry.ask } : {}),
    ...extra,
  });
  // Built-in on both sides: composed in process as object streams, with no JSON in between.
  const objectMode = inSpec.builtin !== undefined && outSpec.builtin !== undefined;
  // A built-in provider hands its metrics lines over directly; an executable's come on its stdout.
  const onMetrics = (side: 'input' | 'output') => (telemetry ? { onMetrics: (line: MetricsLine) => telemetry.offer(side, line) } : {});
  const output = startProvider(outSpec, { ...options, objectMode, ...onMetrics('output') });
  const input = startProvider(inSpec, { ...options, objectMode, ...onMetrics('input') });
  if (telemetry) {
    void output.exited.then((exit) => telemetry.exited('output', exit));
    void input.exited.then((exit) => telemetry.exited('input', exit));
  }
  const summary: RunSummary = { task: task.name, rows: 0, checkpointsAcked: 0 };
  // One SIGTERM per provider: a second one means "exit at once" to a provider draining its work.
  const terminated = new Set<ProviderHandle>();
  const terminate = (h: ProviderHandle) => {
    if (terminated.has(h)) return;
    terminated.add(h);
    h.kill('SIGTERM');
  };
  const stop = (sig: NodeJS.Signals) => {
    summary.stoppedBy ??= sig;
    if (sig === 'SIGTERM') terminate(input);
    else input.kill(sig);
  };
  const onAbort = () => stop('SIGTERM');
  // Acknowledgements can come faster than a durable save: only the latest is saved (each save
  // atomic), at most every SAVE_INTERVAL_MS, so the store never lags more than that and one save
  // behind nor holds an unacknowledged position; the last acknowledgement is saved at the end.
  const saver = latestSaver(
    async (cp: CheckpointEnvelope) => {
      await options.store.save(task.name, cp.data.position, cp.source);
      summary.lastPosition = cp.data.position;
      telemetry?.metrics.checkpointsStored.inc({ task: task.name });
    },
    { minIntervalMs: SAVE_INTERVAL_MS },
  );
  options.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    // What an output prints that is not a protocol line is its own output (the original .NET console
    // output prints every message): shown on stderr under its name, as the original CLI showed it.
    const stray = (line: string) => options.onStderr?.(line, output.label);
    // The output learns how old the resume position is: past its duplicate detection window, replays are new messages.
    const out = await openSession(output, runHeader(task.output, stored === undefined ? {} : { savedAt: stored.savedAt }), { ...options, onStrayLine: stray });
    // An output of the original dstream takes every line for data and acknowledges nothing: it gets
    // data only, and no position can be stored.
    telemetry?.started('output');
    if (!out.dstream) summary.positionsNotStored = `${output.label} does not speak dstream's protocol (it never acknowledges)`;
    // The input learns where positions are kept (an input sharing a task between workers needs a shared store).
    const store = options.store.describe?.();
    const inp = await openSession(input, runHeader(task.input, { ...(stored === undefined ? {} : { state: stored.position }), ...(store ? { store } : {}) }), { ...options, endInput: true });
    telemetry?.started('input');
    const acknowledge = (async () => {
      const error = await readEach(out, (value) => {
        const v = value as { type?: string };
        if (telemetry && isMetricsLine(v)) {
          telemetry.offer('output', v);
          return undefined;
        }
        const line = readHandshake(v);
        if (line.kind === 'error') return line.message;
        if (v?.type !== CHECKPOINT_TYPE || !out.dstream) {
          stray(JSON.stringify(v));
          return undefined;
        }
        const cp = v as CheckpointEnvelope;
        summary.checkpointsAcked++;
        options.onAck?.(cp, summary.rows);
        saver.offer(cp);
        return undefined;
      });
      if (error !== undefined) throw providerFailed(output, error, await output.exited);
      await saver.flush();
      const exit = await output.exited;
      if (exit.code !== 0) {
        terminate(input);
        throw providerFailed(output, 'failed', exit);
      }
    })();
    const forward = (async () => {
      // Rows are counted and error lines caught on the way, without a stream of their own in between.
      const failed: { message?: string } = {};
      const pass = passer(() => summary.rows++, (message) => ((failed.message = message), providerFailed(input, message)), out.dstream, telemetry && ((line) => telemetry.offer('input', line)));
      try {
        if (objectMode) await pump(inp.values, inp.first, output.stdin, pass);
        else {
          // Bytes for a process: the encoder between, piped to its stdin.
          const encoder = encodeEnvelopes();
          await Promise.all([pump(inp.values, inp.first, encoder, pass), pipeline(encoder, output.stdin)]);
        }
      } catch (err) {
        // The output stopped reading: its own failure (exit code, stderr) says why, not the broken pipe.
        if (failed.message === undefined) await acknowledge;
        // The input failed: the output's input has ended, so it drains and finishes (not stopped,
        // nor blamed), and what it acknowledges is stored before the input's failure is reported.
        else await acknowledge.catch(() => undefined);
        throw failed.message === undefined ? namedError(input, err) : providerFailed(input, failed.message, await input.exited);
      }
      const exit = await input.exited;
      const stoppedCleanly = summary.stoppedBy !== undefined && (exit.code === 130 || exit.code === 143 || exit.signal !== null);
      if (exit.code !== 0 && !stoppedCleanly) {
        // Its input has ended, so the output drains and finishes: what it acknowledges is still
        // stored before the input's failure is reported.
        await acknowledge.catch(() => undefined);
        throw providerFailed(input, 'failed', exit);
      }
    })();
    // Whichever side fails first decides the error; the other is stopped.
    await Promise.all([forward, acknowledge].map((p) => p.catch((err: unknown) => {
      terminate(input);
      terminate(output);
      throw err;
    })));
    return summary;
  } catch (err) {
    input.kill('SIGKILL');
    output.kill('SIGKILL');
    // What was acknowledged before the failure is stored before the run reports it.
    const saveFailure = await saver.flush().then(
      () => '',
      (saveErr: unknown) => (saveErr === err ? '' : `; the last acknowledged position could not be stored either: ${messageOf(saveErr)}`),
    );
    if (isDstreamError(err) && saveFailure === '') throw err;
    throw new DstreamError(isDstreamError(err) ? err.code : ErrorCodes.PROVIDER, `${isDstreamError(err) ? '' : `task "${task.name}": `}${messageOf(err)}${saveFailure}`, { cause: err });
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * Hands every value of a session (an older provider's first line first) to `each` as it comes, with
 * no promise per value; stops at the first one `each` answers with an error message, which it
 * resolves with (undefined at the end). A stream error rejects, named as a session names it.
 */
function readEach(session: Session, each: (v: unknown) => string | undefined): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const { values } = session;
    const first = session.first === undefined ? undefined : each(session.first.value);
    if (first !== undefined) {
      resolve(first);
      return;
    }
    const stop = (result: string | undefined, err?: unknown) => {
      values.off('data', onData);
      cleanup();
      if (err === undefined) resolve(result);
      else reject(namedError(session.handle, err));
    };
    const onData = (v: unknown) => {
      const message = each(v);
      if (message === undefined) return;
      // What follows an error line is not read (as the provider's exit is awaited).
      values.pause();
      stop(message);
    };
    const cleanup = finished(values, { writable: false }, (err) => stop(undefined, err ?? undefined));
    values.on('data', onData);
  });
}

/** What pass() gives for a value that goes no further. */
const DROP = Symbol('drop');

/**
 * The input's values on their way to the output: counts data rows, takes the input's metrics lines
 * out, drops checkpoint markers for an output that would take them for data, and stops at an error
 * line (the input failing mid-stream: the error pass() throws).
 */
function passer(onRow: () => void, failed: (message: string) => Error, checkpoints = true, onMetrics?: (line: MetricsLine) => void): (v: unknown) => unknown {
  return (value) => {
    const v = value as { type?: string } | null;
    if (v?.type === CHECKPOINT_TYPE) return checkpoints ? v : DROP;
    // The input's metrics are the executor's to serve, not data (only sent when asked for).
    if (onMetrics !== undefined && isMetricsLine(v)) {
      onMetrics(v);
      return DROP;
    }
    const line = readHandshake(v);
    if (line.kind === 'error') throw failed(line.message);
    onRow();
    return v;
  };
}

/**
 * Longest stretch the pipe forwards values without letting the event loop turn. With both
 * providers built in, a window's rows go from the reader to the sink in one synchronous run of
 * promises for as long as the driver has rows buffered (5,000 rows and more at 10,000 rows/s, up
 * to hundreds of ms on a busy machine); meanwhile no timer fires (the sink's linger, which sends a
 * batch) and no socket is read (Service Bus accepting the batch in flight, which lets the next one
 * go). Pausing for one turn of the loop after this long keeps sends going while a window is read.
 */
export const PUMP_SLICE_MS = 5;

/**
 * Writes `first` (an older provider's first line) and then every value of `source` into `dest`
 * through `pass`, pausing while `dest` is full, and ends `dest` at the end of `source`: a pipe with
 * nothing in between. Settles when `dest` has finished; on an error (either stream's, or pass's)
 * both streams are destroyed, as pipeline() does. It also pauses for one turn of the event loop
 * after forwarding for PUMP_SLICE_MS without one.
 */
function pump(source: Readable, first: { value: unknown } | undefined, dest: Writable, pass: (v: unknown) => unknown): Promise<void> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const stops: (() => void)[] = [];
    const settle = (err?: unknown) => {
      if (settled) return;
      settled = true;
      source.off('data', onData);
      dest.off('drain', onDrain);
      if (err === undefined) {
        for (const stop of stops) stop();
        resolve();
      } else {
        // With the error, as pipeline() does (a built-in output learns it on its stdin); the
        // listeners of finished() stay, to take the 'error' events this emits.
        source.destroy(err as Error);
        dest.destroy(err as Error);
        reject(err);
      }
    };
    const put = (v: unknown): boolean => {
      let out: unknown;
      try {
        out = pass(v);
      } catch (err) {
        settle(err);
        return false;
      }
      return out === DROP || dest.write(out);
    };
    // Paused for two reasons, resumed when neither holds: `dest` is full (until its 'drain'), and
    // a turn of the event loop is due (until setImmediate, which runs after the loop has polled
    // for I/O; timers come next, before the slice after it can end).
    let full = false;
    let turning = false;
    // When the current synchronous stretch began (-1: none yet); setImmediate clears it once the loop has turned.
    let sliceStart = -1;
    const sliceEnded = () => {
      sliceStart = -1;
    };
    const turned = () => {
      turning = false;
      sliceStart = -1;
      if (!full && !settled) source.resume();
    };
    const onData = (v: unknown) => {
      if (!put(v)) {
        if (!settled) {
          full = true;
          source.pause();
        }
        return;
      }
      const now = performance.now();
      if (sliceStart < 0) {
        sliceStart = now;
        setImmediate(sliceEnded);
      } else if (now - sliceStart >= PUMP_SLICE_MS && !turning) {
        turning = true;
        source.pause();
        setImmediate(turned);
      }
    };
    const onDrain = () => {
      full = false;
      if (!turning) source.resume();
    };
    stops.push(finished(source, { writable: false }, (err) => (err ? settle(err) : dest.end())));
    stops.push(finished(dest, { readable: false }, (err) => settle(err ?? undefined)));
    dest.on('drain', onDrain);
    if (first !== undefined && !put(first.value)) {
      if (settled) return;
      full = true;
      source.pause();
    }
    source.on('data', onData);
  });
}
