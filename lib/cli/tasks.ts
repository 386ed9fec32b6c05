/**
 * The task verbs of the CLI: validate, plan, init, status, destroy, run, reset. Each is a function
 * of parsed options and stdio, returning an exit code. Every verb loads and checks its task the
 * same way (check.ts) before it starts anything, and keeps the task's state beside its file.
 */
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { loadTaskFile, taskNamed, type TaskConfig, type TaskFile } from '../config/tasks.js';
import { DstreamError, ErrorCodes, messageOf } from '../errors.js';
import type { OpsServer } from '../metrics/server.js';
import { BUILTINS } from '../providers/builtins.js';
import { runTask, taskVerb, type ExecutorOptions, type LifecycleReport } from '../executor/executor.js';
import { FileStateStore, type StateStore, type StoredState } from '../state/state-store.js';
import { openStateStore } from '../state/stores.js';
import { ExitCodes } from '../protocol/exit-codes.js';
import type { LifecycleVerb, ResourceReport } from '../protocol/messages.js';
import { confirmRemoval } from '../provider/confirm.js';
import { Logger, secretValues, LOG_FORMAT_ENV, STDERR_TAIL_HEADING, type LogFormat } from '../log.js';
import { checkTask } from './check.js';
import { reportError } from './output.js';
import { colorsFor, formatReport, hasChanges, resourceFacts } from './report.js';

export interface TaskCommandOptions {
  task?: string;
  config?: string;
  json?: boolean;
  yes?: boolean;
  quiet?: boolean;
  verbose?: boolean;
  /** validate: missing {{ env }} variables read as placeholders. */
  skipEnv?: boolean;
  /** plan: exit 0 without changes, 2 with changes (and 1 on any error), as Terraform's. */
  detailedExitcode?: boolean;
  /** run: serve metrics and health on this port (over the task file's metrics { port }). */
  metricsPort?: number;
  metricsHost?: string;
}

export interface TaskIO {
  stdin: Readable & { isTTY?: boolean };
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable & { isTTY?: boolean };
  env: Record<string, string | undefined>;
  /** Where SIGINT/SIGTERM come from during run. */
  signals?: NodeJS.EventEmitter;
  /** How log lines on stderr look (--log-format); default text. */
  logFormat?: LogFormat;
}

/** dstream's logger for one command (its task, when named), on the command's stderr. */
export function commandLogger(io: TaskIO, task?: string): Logger {
  return new Logger({ stream: io.stderr, format: io.logFormat ?? 'text', name: 'dstream', ...(task === undefined ? {} : { task }) });
}

const configPath = (o: TaskCommandOptions, env: TaskIO['env']) => o.config ?? env.DSTREAM_CONFIG ?? 'dstream.hcl';

async function guarded(io: TaskIO, o: TaskCommandOptions, fn: (log: Logger) => Promise<number>, shownLive: () => boolean = () => false): Promise<number> {
  const log = commandLogger(io, o.task);
  try {
    return await fn(log);
  } catch (err) {
    return reportError(io, o, err, once(messageOf(err), shownLive() && !o.verbose, o.verbose ? [] : [...SAID_LIVE]), log);
  }
}

/** The last provider lines shown live (without their name prefix), so an error need not repeat them. */
const SAID_LIVE = new Set<string>();
function saidLive(text: string): void {
  SAID_LIVE.add(text);
  if (SAID_LIVE.size > 50) SAID_LIVE.delete(SAID_LIVE.values().next().value!);
}

/**
 * A provider's error said once: without its stderr tail when those lines were already shown live,
 * and without tail lines that only repeat the error itself (--verbose keeps everything).
 */
function once(message: string, shownLive: boolean, live: string[] = []): string {
  const at = message.indexOf(TAIL_MARK);
  let head = at === -1 ? message : message.slice(0, at);
  // `output asb-sink: init failed: <what it printed above> (exit code 1)`: point at it instead.
  for (const text of live) {
    if (text.length > 0 && head.includes(`: ${text}`)) {
      head = `${head.replace(`: ${text}`, '')}; its message is above`;
      break;
    }
  }
  if (at === -1) return head;
  if (shownLive) return head;
  const rest = message
    .slice(at + TAIL_MARK.length + 1)
    .split('\n')
    .filter((line) => !head.includes(line.replace(/^[\w.-]+: /, '').trim()));
  return rest.length === 0 ? head : `${head}${TAIL_MARK}\n${rest.join('\n')}`;
}
const TAIL_MARK = `\n${STDERR_TAIL_HEADING}`;

interface Prepared {
  file: TaskFile;
  task: TaskConfig;
  /** Where this task's state lives (file store, Pulumi stacks): the executor's environment carries it. */
  stateDir: string;
  options: ExecutorOptions;
  shownLive: boolean;
}

/** The state directory: state { dir }, else DSTREAM_STATE_DIR, else .dstream beside the task file (as Terraform keeps its state). */
export function stateDirOf(task: TaskConfig, env: TaskIO['env']): string {
  return task.state?.dir ?? (env.DSTREAM_STATE_DIR || join(task.dir ?? process.cwd(), '.dstream'));
}

async function prepare(o: TaskCommandOptions, io: TaskIO, log: Logger): Promise<Prepared> {
  const file = await loadTaskFile(configPath(o, io.env), io.env, { task: o.task });
  const task = taskNamed(file, o.task!);
  // The task's secrets (connection strings, keys) are masked in every line logged from here on.
  log.addSecrets(secretValues([task.input.config, task.output.config, task.state]));
  await checkTask(task, BUILTINS, io.env);
  const stateDir = stateDirOf(task, io.env);
  const shownLive = !o.quiet;
  const onStderr = (line: string, label: string) => {
    // Each line under the provider's name, unless it already says it (`asb-sink: ...`, `count-provider: ...` from count-provider.mjs).
    const name = label.split(' ').slice(1).join(' ').split('/').pop()!;
    log.forward(line, name, name);
    const own = [name, name.replace(/\.(m?js|cjs)$/, '')].find((n) => line.startsWith(`${n}: `));
    saidLive(own ? line.slice(own.length + 2) : line);
  };
  const options: ExecutorOptions = {
    builtins: BUILTINS,
    // Providers log in the same form as dstream (they read DSTREAM_LOG_FORMAT).
    env: { ...io.env, DSTREAM_STATE_DIR: stateDir, [LOG_FORMAT_ENV]: log.format },
    ...(task.dir ? { cwd: task.dir } : {}),
    ...(shownLive ? { onStderr } : {}),
    onNote: (text: string) => log.info(`note: ${text}`),
  };
  return { file, task, stateDir, options, shownLive };
}

async function withStore<T>(p: Prepared, fn: (store: StateStore) => Promise<T>): Promise<T> {
  const store = await openStateStore(p.task.state, p.options.env);
  try {
    return await fn(store);
  } finally {
    await store.close?.();
  }
}

function whereStored(store: StateStore, task: string): string {
  if (store instanceof FileStateStore) return store.pathOf(task);
  const d = store.describe?.();
  return d?.table ? `table ${d.table}` : (d?.kind ?? 'the state store');
}

export function validateCommand(o: TaskCommandOptions, io: TaskIO): Promise<number> {
  return guarded(io, o, async (log) => {
    const file = await loadTaskFile(configPath(o, io.env), io.env, { skipEnv: o.skipEnv === true, task: o.task });
    const tasks = o.task === undefined ? file.tasks : [taskNamed(file, o.task)];
    // With --skip-env the secrets are not there: variables that fill config fall back to nothing.
    const env = o.skipEnv ? {} : io.env;
    for (const t of tasks) await checkTask(t, BUILTINS, env);
    if (o.json) io.stdout.write(`${JSON.stringify({ valid: true, file: file.file, tasks: tasks.map((t) => t.name) })}\n`);
    else io.stdout.write(`${file.file}: valid (${tasks.map((t) => `task "${t.name}"`).join(', ')})${o.skipEnv ? ' (environment variables not checked)' : ''}\n`);
    return ExitCodes.OK;
  });
}

export async function lifecycleCommand(verb: LifecycleVerb, o: TaskCommandOptions, io: TaskIO): Promise<number> {
  if (verb === 'destroy') return destroyCommand(o, io);
  let shownLive = false;
  let changes = false;
  const code = await guarded(
    io,
    o,
    async (log) => {
      const p = await prepare(o, io, log);
      shownLive = p.shownLive;
      const state = verb === 'status' ? await withStore(p, (store) => store.load(p.task.name)) : undefined;
      const report = await taskVerb(p.task, verb, { ...p.options, ...(state ? { position: state.position } : {}) });
      io.stdout.write(o.json ? `${JSON.stringify({ ...report, ...(verb === 'status' ? { position: state ?? null } : {}) })}\n` : formatReport(report, state, { colors: colorsFor(io.stdout, io.env) }));
      changes = hasChanges(report);
      return report.input?.status === 'error' ? ExitCodes.FAILURE : ExitCodes.OK;
    },
    () => shownLive,
  );
  // --detailed-exitcode: 0 no changes, 2 changes, 1 any error (as Terraform: 2 no longer means bad options).
  if (!o.detailedExitcode) return code;
  if (code !== ExitCodes.OK) return ExitCodes.FAILURE;
  return changes ? 2 : ExitCodes.OK;
}

/** The existing resources of a status report (output first), as lines for a removal list. */
function existing(report: LifecycleReport, only: (r: ResourceReport) => boolean = () => true): string[] {
  const all = [...((report.output.resources ?? []) as ResourceReport[]), ...((report.input?.resources ?? []) as ResourceReport[])];
  return all.filter((r) => r.exists !== false && r.action !== 'create' && only(r)).map((r) => {
    const facts = resourceFacts(r);
    return `${r.kind} ${r.name}${facts.length ? ` (${facts.join(', ')})` : ''}`;
  });
}

/** Resources of the output that hold data (a file with bytes, a queue with messages). */
const holdsData = (r: ResourceReport) => (typeof r.sizeInBytes === 'number' && r.sizeInBytes > 0) || (typeof r.activeMessages === 'number' && r.activeMessages > 0);

function positionLine(state: StoredState | undefined, where: string): string[] {
  return state === undefined ? [] : [`the stored position of task "${state.task}" (${where}): the next run starts where the input starts`];
}

function destroyCommand(o: TaskCommandOptions, io: TaskIO): Promise<number> {
  return guarded(io, o, async (log) => {
    const p = await prepare(o, io, log);
    const { task } = p;
    return withStore(p, async (store) => {
      const state = await store.load(task.name);
      const status = await taskVerb(task, 'status', { ...p.options, onStderr: undefined });
      await confirmRemoval({ ...io, log }, {
        program: 'dstream',
        action: `destroy task "${task.name}"`,
        items: [...existing(status), ...positionLine(state, whereStored(store, task.name))],
        name: task.name,
        yes: o.yes === true,
      });
      const report = await taskVerb(task, 'destroy', p.options);
      // The position describes what was delivered into what is now gone: it goes too.
      const forgot = await store.reset(task.name);
      if (o.json) io.stdout.write(`${JSON.stringify({ ...report, position: { forgotten: forgot } })}\n`);
      else io.stdout.write(`${formatReport(report, undefined, { colors: colorsFor(io.stdout, io.env) })}${forgot ? `Position: forgotten (${whereStored(store, task.name)}); the next run starts where the input starts.\n` : 'Position: none was stored.\n'}`);
      // The output's part is done; the input's setup that could not be undone makes it a failure to see.
      return report.input?.status === 'error' ? ExitCodes.FAILURE : ExitCodes.OK;
    });
  });
}

export function runCommand(o: TaskCommandOptions, io: TaskIO): Promise<number> {
  let shownLive = false;
  return guarded(
    io,
    o,
    async (log) => {
      const p = await prepare(o, io, log);
      shownLive = p.shownLive;
      const { task } = p;
      const abort = new AbortController();
      let stoppedBy: NodeJS.Signals | undefined;
      const onSignal = (sig: NodeJS.Signals) => {
        if (stoppedBy !== undefined) return;
        stoppedBy = sig;
        log.warn(`${sig}: stopping task "${task.name}"; delivering what is in flight`);
        abort.abort();
      };
      const signals = io.signals ?? process;
      signals.on('SIGINT', onSignal);
      signals.on('SIGTERM', onSignal);
      const started = Date.now();
      let acked = { rows: 0, acks: 0, at: started };
      let shown = { rows: 0, at: started };
      const progress = o.quiet
        ? undefined
        : setInterval(() => {
            const now = Date.now();
            const rate = ((acked.rows - shown.rows) * 1000) / Math.max(1, now - shown.at);
            shown = { rows: acked.rows, at: now };
            const lag = acked.acks === 0 ? 'none acknowledged yet' : `last ${((now - acked.at) / 1000).toFixed(1)} s ago`;
            log.info(`${task.name}: ${acked.rows} rows (${Math.round(rate)} rows/s), ${acked.acks} checkpoints acknowledged (${lag}), ${((now - started) / 1000).toFixed(0)} s`);
          }, 2000).unref();
      const store = await openStateStore(task.state, p.options.env);
      try {
        const stored = await store.load(task.name);
        if (stored === undefined && !o.quiet) log.info(`task "${task.name}": no stored position (${whereStored(store, task.name)}); the input starts where it starts`);
        const metrics = metricsOf(task, o);
        const summary = await runTask(task, {
          ...p.options,
          store,
          signal: abort.signal,
          ...(metrics
            ? { metrics: { ...metrics, onListening: (server: OpsServer) => log.info(`metrics at ${server.url}/metrics (probes: /healthz, /readyz)`) } }
            : {}),
          onAck: (_cp, rows) => (acked = { rows, acks: acked.acks + 1, at: Date.now() }),
        });
        const seconds = (Date.now() - started) / 1000;
        if (o.json) {
          io.stdout.write(`${JSON.stringify({ ...summary, durationMs: Date.now() - started, stoppedBy: stoppedBy ?? null, stopReason: stoppedBy ? `stopped by ${stoppedBy}` : 'input ended' })}\n`);
        } else {
          const took = `${seconds.toFixed(1)} s${stoppedBy ? ` (stopped by ${stoppedBy})` : ''}`;
          log.info(
            summary.positionsNotStored === undefined
              ? `task "${task.name}": ${summary.rows} rows delivered, ${summary.checkpointsAcked} checkpoints acknowledged (the last one stored) in ${took}`
              : `task "${task.name}": ${summary.rows} rows sent, positions not stored: ${summary.positionsNotStored}; the next run starts where the input starts without a stored position, in ${took}`,
          );
        }
        return stoppedBy === 'SIGINT' ? ExitCodes.INTERRUPTED : stoppedBy === 'SIGTERM' ? ExitCodes.TERMINATED : ExitCodes.OK;
      } finally {
        if (progress) clearInterval(progress);
        await store.close?.();
        signals.off('SIGINT', onSignal);
        signals.off('SIGTERM', onSignal);
      }
    },
    () => shownLive,
  );
}

/** --metrics-port/--metrics-host over the task file's metrics block. */
function metricsOf(task: TaskConfig, o: TaskCommandOptions): { port: number; host?: string } | undefined {
  const port = o.metricsPort ?? task.metrics?.port;
  if (port === undefined) return undefined;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new DstreamError(ErrorCodes.CONFIG, `--metrics-port must be a port number (0-65535); got ${port}`);
  const host = o.metricsHost ?? task.metrics?.host;
  return { port, ...(host !== undefined ? { host } : {}) };
}

export function resetCommand(o: TaskCommandOptions, io: TaskIO): Promise<number> {
  return guarded(io, o, async (log) => {
    const p = await prepare(o, io, log);
    const { task } = p;
    return withStore(p, async (store) => {
      const state = await store.load(task.name);
      if (state === undefined) {
        io.stdout.write(o.json ? `${JSON.stringify({ task: task.name, reset: false })}\n` : `task "${task.name}": no stored position (${whereStored(store, task.name)})\n`);
        return ExitCodes.OK;
      }
      await confirmRemoval({ ...io, log }, { program: 'dstream', action: `reset task "${task.name}"`, items: positionLine(state, whereStored(store, task.name)), name: task.name, yes: o.yes === true });
      await store.reset(task.name);
      // The output keeps what it holds: say what the next run does with it.
      const status = await taskVerb(task, 'status', { ...p.options, onStderr: undefined });
      const holding = existing({ ...status, input: undefined }, holdsData);
      if (o.json) {
        io.stdout.write(`${JSON.stringify({ task: task.name, reset: true, outputHolds: holding })}\n`);
      } else {
        io.stdout.write(`task "${task.name}": stored position forgotten; the next run starts where the input starts\n`);
        if (holding.length > 0) {
          io.stdout.write(`The output still holds data; the next run appends to it (\`dstream destroy ${task.name}\` removes it to start clean):\n${holding.map((l) => `  ${l}\n`).join('')}`);
        }
      }
      return ExitCodes.OK;
    });
  });
}
