/**
 * Task-level operations: lifecycle verbs (discover from the input feeds the output's
 * plan/init/status/destroy) and run (input data -> output, acknowledged checkpoints -> state
 * store). Providers are handles (provider-handle.ts), so built-ins and executables behave alike.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { encodeEnvelopes } from '../envelope/encode.js';
import { CHECKPOINT_TYPE, type CheckpointEnvelope } from '../envelope/types.js';
import { DstreamError, ErrorCodes, isDstreamError, messageOf } from '../errors.js';
import type { TaskConfig, ProviderRef } from '../config/tasks.js';
import { header, PROTOCOL_VERSION, readHandshake, type CommandHeader, type LifecycleVerb, type ResultLine, type StreamDescriptor } from '../protocol/messages.js';
import { builtinNamed, type BuiltinProvider } from './builtins.js';
import { startProvider, type ProviderHandle, type ProviderSpec, type StartOptions } from './provider-handle.js';
import { latestSaver } from './latest-saver.js';
import { openSession, providerFailed } from './session.js';
import type { StateStore } from './state-store.js';

export interface ExecutorOptions extends StartOptions {
  builtins: Record<string, BuiltinProvider>;
  handshakeTimeoutMs?: number;
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

/** Runs one lifecycle verb on one provider and returns its result line; a failure throws. */
export async function providerVerb(spec: ProviderSpec, h: CommandHeader, options: ExecutorOptions): Promise<ResultLine> {
  const handle = startProvider(spec, options);
  return withHandle(handle, async () => {
    const session = await openSession(handle, h, { ...options, endInput: true });
    const next = await session.lines.next();
    const exit = await handle.exited;
    if (next.done) throw providerFailed(handle, `gave no answer to "${h.command}"`, exit);
    const result = next.value as ResultLine;
    if (result?.status === 'error') throw providerFailed(handle, `${h.command} failed: ${result.message ?? 'no message'}`, exit, result.code);
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
}

/**
 * `discover` on the input, then the verb on the input (when it supports it: an input may own
 * setup too, such as CDC on the source tables) and on the output. destroy runs the output first,
 * the reverse of init. `position` (the stored one) goes to the input's status, for its lag.
 */
export async function taskVerb(task: TaskConfig, command: LifecycleVerb, options: ExecutorOptions & { position?: unknown }): Promise<LifecycleReport> {
  const input = await specOf('input', task.input, options.builtins);
  const output = await specOf('output', task.output, options.builtins);
  const discovered = await providerVerb(input, header('discover', task.input.config, { task: task.name }), options);
  const streams = (discovered.streams as StreamDescriptor[] | undefined) ?? [];
  const onInput = async (): Promise<ResultLine | undefined> => {
    if (command === 'discover') return undefined;
    const extra = command === 'status' && options.position !== undefined ? { task: task.name, state: options.position } : { task: task.name };
    // Optional for inputs: its stderr goes only into the error (which names it), not to the screen.
    return providerVerb(input, header(command, task.input.config, extra), { ...options, onStderr: undefined }).catch((err: DstreamError) => {
      // An input without setup of its own may not support the verb; that is not a failure.
      if (err.details?.providerCode === ErrorCodes.UNSUPPORTED_COMMAND) return undefined;
      throw err;
    });
  };
  const onOutput = () => providerVerb(output, header(command, task.output.config, { task: task.name, streams }), options);
  let inputResult: ResultLine | undefined;
  let out: ResultLine;
  if (command === 'destroy') {
    out = await onOutput();
    inputResult = await onInput();
  } else {
    inputResult = await onInput();
    out = await onOutput();
  }
  return { task: task.name, command, streams, ...(inputResult ? { input: inputResult } : {}), output: out };
}

export interface RunSummary {
  task: string;
  rows: number;
  checkpointsAcked: number;
  lastPosition?: unknown;
  stoppedBy?: NodeJS.Signals;
}

export interface RunOptions extends ExecutorOptions {
  store: StateStore;
  /** Stops the run: the input is asked to stop, the output drains, the last acknowledgement is stored. */
  signal?: AbortSignal;
  onAck?: (checkpoint: CheckpointEnvelope, rows: number) => void;
}

/** Streams a task until its input ends or `signal` aborts; stores each acknowledged checkpoint. */
export async function runTask(task: TaskConfig, options: RunOptions): Promise<RunSummary> {
  const stored = await options.store.load(task.name);
  const inSpec = await specOf('input', task.input, options.builtins);
  const outSpec = await specOf('output', task.output, options.builtins);
  // Config keys also at the top level: a provider of the older dstream reads its first line as config.
  const runHeader = (ref: ProviderRef, extra: Partial<CommandHeader>): CommandHeader => ({ ...ref.config, command: 'run', config: ref.config, protocol: PROTOCOL_VERSION, task: task.name, ...extra });
  // Built-in on both sides: composed in process as object streams, with no JSON in between.
  const objectMode = inSpec.builtin !== undefined && outSpec.builtin !== undefined;
  const output = startProvider(outSpec, { ...options, objectMode });
  const input = startProvider(inSpec, { ...options, objectMode });
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
  options.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    // The output learns how old the resume position is: past its duplicate detection window, replays are new messages.
    const out = await openSession(output, runHeader(task.output, stored === undefined ? {} : { savedAt: stored.savedAt }), options);
    // The input learns where positions are kept (an input sharing a task between workers needs a shared store).
    const store = options.store.describe?.();
    const inp = await openSession(input, runHeader(task.input, { ...(stored === undefined ? {} : { state: stored.position }), ...(store ? { store } : {}) }), { ...options, endInput: true });
    // Acknowledgements can come faster than a durable save: only the latest is saved (each save
    // atomic), so the store never lags more than one save behind nor holds an unacknowledged position.
    const saver = latestSaver(async (cp: CheckpointEnvelope) => {
      await options.store.save(task.name, cp.data.position, cp.source);
      summary.lastPosition = cp.data.position;
    });
    const acknowledge = (async () => {
      for (let n = await out.lines.next(); !n.done; n = await out.lines.next()) {
        const v = n.value as { type?: string };
        const line = readHandshake(v);
        if (line.kind === 'error') throw providerFailed(output, line.message, await output.exited);
        if (v?.type !== CHECKPOINT_TYPE) continue;
        const cp = v as CheckpointEnvelope;
        summary.checkpointsAcked++;
        options.onAck?.(cp, summary.rows);
        saver.offer(cp);
      }
      await saver.flush();
      const exit = await output.exited;
      if (exit.code !== 0) {
        terminate(input);
        throw providerFailed(output, 'failed', exit);
      }
    })();
    const forward = (async () => {
      const toOutput = objectMode ? [] : [encodeEnvelopes()];
      const rows = forwarder(inp.first, () => summary.rows++, (message) => providerFailed(input, message));
      try {
        await pipeline(inp.values, rows, ...toOutput, output.stdin);
      } catch (err) {
        // The output stopped reading: its own failure (exit code, stderr) says why, not the broken pipe.
        if (rows.failed === undefined) await acknowledge;
        throw rows.failed === undefined ? err : providerFailed(input, rows.failed, await input.exited);
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
    if (isDstreamError(err)) throw err;
    throw new DstreamError(ErrorCodes.PROVIDER, `task "${task.name}": ${messageOf(err)}`, { cause: err });
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * The input's values on their way to the output: counts data rows and stops at an error line (the
 * input failing mid-stream).
 */
function forwarder(first: { value: unknown } | undefined, onRow: () => void, failed: (message: string) => Error): Transform & { failed?: string } {
  const t: Transform & { failed?: string } = new Transform({
    objectMode: true,
    transform(v: { type?: string } | null, _enc, callback: TransformCallback) {
      if (v?.type === CHECKPOINT_TYPE) {
        callback(null, v);
        return;
      }
      const line = readHandshake(v);
      if (line.kind === 'error') {
        t.failed = line.message;
        callback(failed(line.message));
        return;
      }
      onRow();
      callback(null, v);
    },
  });
  if (first !== undefined) t.write(first.value);
  return t;
}
