/**
 * The task verbs of the CLI: validate, plan, init, status, destroy, run, reset. Each is a function
 * of parsed options and stdio, returning an exit code.
 */
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline/promises';
import type { Readable, Writable } from 'node:stream';
import { loadTaskFile, taskNamed } from '../config/tasks.js';
import { DstreamError, ErrorCodes, messageOf } from '../errors.js';
import { validateProviderConfig } from '../provider/run-provider.js';
import { BUILTINS, builtinNamed } from '../executor/builtins.js';
import { runTask, taskVerb } from '../executor/executor.js';
import type { TaskConfig } from '../config/tasks.js';
import type { StateStore } from '../executor/state-store.js';
import { openStateStore } from '../executor/stores.js';
import { exitCodeFor, ExitCodes } from '../protocol/exit-codes.js';
import type { LifecycleVerb } from '../protocol/messages.js';
import { formatReport } from './report.js';

export interface TaskCommandOptions {
  task?: string;
  config?: string;
  json?: boolean;
  yes?: boolean;
  quiet?: boolean;
}

export interface TaskIO {
  stdin: Readable & { isTTY?: boolean };
  stdout: Writable;
  stderr: Writable;
  env: Record<string, string | undefined>;
  /** Where SIGINT/SIGTERM come from during run. */
  signals?: NodeJS.EventEmitter;
}

/** Provider stderr passes through, each line under the provider's name (unless it already says it). */
const prefixed = (io: TaskIO) => (line: string, label: string) => {
  const name = label.split(' ').slice(1).join(' ').split('/').pop()!;
  io.stderr.write(line.startsWith(`${name}:`) ? `${line}\n` : `${name}: ${line}\n`);
};

const configPath = (o: TaskCommandOptions, env: TaskIO['env']) => o.config ?? env.DSTREAM_CONFIG ?? 'dstream.hcl';

async function guarded(io: TaskIO, fn: () => Promise<number>): Promise<number> {
  try {
    return await fn();
  } catch (err) {
    io.stderr.write(`dstream: ${messageOf(err)}\n`);
    return exitCodeFor(err);
  }
}

export function validateCommand(o: TaskCommandOptions, io: TaskIO): Promise<number> {
  return guarded(io, async () => {
    const file = await loadTaskFile(configPath(o, io.env), io.env);
    const tasks = o.task === undefined ? file.tasks : [taskNamed(file, o.task)];
    // Built-in providers' config is checked here too (executables check theirs when started).
    for (const t of tasks) {
      for (const side of ['input', 'output'] as const) {
        const ref = t[side];
        const def = ref.provider === undefined ? undefined : await builtinNamed(BUILTINS, ref.provider);
        if (def?.config === undefined) continue;
        try {
          validateProviderConfig(def, ref.config, { path: `task "${t.name}" ${side}.config`, env: io.env });
        } catch (err) {
          throw new DstreamError(ErrorCodes.CONFIG, `${t.file}:${ref.line ?? t.line}: ${messageOf(err)}`, { cause: err });
        }
      }
    }
    if (o.json) io.stdout.write(`${JSON.stringify({ valid: true, file: file.file, tasks: tasks.map((t) => t.name) })}\n`);
    else io.stdout.write(`${file.file}: valid (${tasks.map((t) => `task "${t.name}"`).join(', ')})\n`);
    return ExitCodes.OK;
  });
}

async function confirm(io: TaskIO, question: string, expected: string): Promise<boolean> {
  const rl = createInterface({ input: io.stdin, output: io.stderr });
  try {
    return (await rl.question(question)).trim() === expected;
  } finally {
    rl.close();
  }
}

async function withStore<T>(task: TaskConfig, io: TaskIO, fn: (store: StateStore) => Promise<T>): Promise<T> {
  const store = await openStateStore(task.state, io.env);
  try {
    return await fn(store);
  } finally {
    await store.close?.();
  }
}

export function lifecycleCommand(verb: LifecycleVerb, o: TaskCommandOptions, io: TaskIO): Promise<number> {
  return guarded(io, async () => {
    const file = await loadTaskFile(configPath(o, io.env), io.env);
    const task = taskNamed(file, o.task!);
    if (verb === 'destroy' && !o.yes) {
      if (!io.stdin.isTTY) {
        io.stderr.write(`dstream: destroy removes what task "${task.name}" created; run it from a terminal to confirm, or pass --yes\n`);
        return ExitCodes.USAGE;
      }
      if (!(await confirm(io, `Destroy everything task "${task.name}" created? Type the task name to confirm: `, task.name))) {
        io.stderr.write('dstream: not confirmed; nothing destroyed\n');
        return ExitCodes.USAGE;
      }
    }
    const state = verb === 'status' ? await withStore(task, io, (store) => store.load(task.name)) : undefined;
    const report = await taskVerb(task, verb, { builtins: BUILTINS, env: io.env, onStderr: prefixed(io), ...(state ? { position: state.position } : {}) });
    io.stdout.write(o.json ? `${JSON.stringify({ ...report, ...(verb === 'status' ? { position: state ?? null } : {}) })}\n` : formatReport(report, state));
    return ExitCodes.OK;
  });
}

export function runCommand(o: TaskCommandOptions, io: TaskIO): Promise<number> {
  return guarded(io, async () => {
    const file = await loadTaskFile(configPath(o, io.env), io.env);
    const task = taskNamed(file, o.task!);
    const abort = new AbortController();
    let stoppedBy: NodeJS.Signals | undefined;
    const onSignal = (sig: NodeJS.Signals) => {
      if (stoppedBy !== undefined) return;
      stoppedBy = sig;
      io.stderr.write(`dstream: ${sig}: stopping task "${task.name}"; delivering what is in flight\n`);
      abort.abort();
    };
    const signals = io.signals ?? process;
    signals.on('SIGINT', onSignal);
    signals.on('SIGTERM', onSignal);
    const started = Date.now();
    let last = { rows: 0, acks: 0 };
    const progress = o.quiet
      ? undefined
      : setInterval(() => io.stderr.write(`dstream: ${task.name}: ${last.rows} rows, ${last.acks} checkpoints acknowledged, ${((Date.now() - started) / 1000).toFixed(0)} s\n`), 2000).unref();
    const store = await openStateStore(task.state, io.env);
    try {
      const summary = await runTask(task, {
        builtins: BUILTINS,
        store,
        signal: abort.signal,
        env: io.env,
        onStderr: prefixed(io),
        onAck: (_cp, rows) => (last = { rows, acks: last.acks + 1 }),
      });
      const text = `task "${task.name}": ${summary.rows} rows delivered, ${summary.checkpointsAcked} checkpoints acknowledged (the last one stored) in ${((Date.now() - started) / 1000).toFixed(1)} s${stoppedBy ? ` (stopped by ${stoppedBy})` : ''}`;
      if (o.json) io.stdout.write(`${JSON.stringify(summary)}\n`);
      else io.stderr.write(`dstream: ${text}\n`);
      return stoppedBy === 'SIGINT' ? ExitCodes.INTERRUPTED : stoppedBy === 'SIGTERM' ? ExitCodes.TERMINATED : ExitCodes.OK;
    } finally {
      if (progress) clearInterval(progress);
      await store.close?.();
      signals.off('SIGINT', onSignal);
      signals.off('SIGTERM', onSignal);
    }
  });
}

export function resetCommand(o: TaskCommandOptions, io: TaskIO): Promise<number> {
  return guarded(io, async () => {
    // The task's own store when its file declares one; the default file store without a task file.
    const path = configPath(o, io.env);
    const task = existsSync(path) ? taskNamed(await loadTaskFile(path, io.env), o.task!) : undefined;
    const store = await openStateStore(task?.state, io.env);
    if (!o.yes) {
      if (!io.stdin.isTTY) {
        io.stderr.write(`dstream: reset forgets where task "${o.task}" got to (the next run starts over); confirm from a terminal or pass --yes\n`);
        return ExitCodes.USAGE;
      }
      if (!(await confirm(io, `Forget the stored position of task "${o.task}"? Type the task name to confirm: `, o.task!))) return ExitCodes.USAGE;
    }
    const had = await store.reset(o.task!).finally(() => store.close?.());
    io.stdout.write(o.json ? `${JSON.stringify({ task: o.task, reset: had })}\n` : had ? `task "${o.task}": stored position forgotten\n` : `task "${o.task}": no stored position\n`);
    return ExitCodes.OK;
  });
}
