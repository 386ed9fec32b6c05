/**
 * runProvider(): the stdio host of every provider executable. It reads the command header,
 * validates config, answers the handshake, routes the verb, keeps stdout for protocol lines and
 * data (logs go to stderr), maps failures to an error line and exit code, stops cleanly on
 * SIGINT/SIGTERM and exits quietly when stdout's reader goes away (EPIPE).
 *
 * In process (`objectMode`), stdin and stdout carry the same messages as objects instead of NDJSON
 * lines: the executor composes built-in providers that way, and nothing else changes.
 */
import type { Readable, Writable } from 'node:stream';
import { format } from 'node:util';
import { validateConfig, type ConfigOf, type ConfigSchema, type ValidateOptions } from '../config/schema.js';
import { decodeEnvelopes, type EnvelopeDecoder } from '../envelope/decode.js';
import { encodeEnvelopes, type EnvelopeEncoder } from '../envelope/encode.js';
import { DstreamError, ErrorCodes, isDstreamError, messageOf } from '../errors.js';
import { okLine, routeCommands, type CommandHandlers, type CommandRouter } from '../protocol/command-router.js';
import { exitCodeFor, ExitCodes } from '../protocol/exit-codes.js';
import {
  errorLine,
  READY,
  VERBS,
  type CommandHeader,
  type MetricsLine,
  type LifecycleVerb,
  type ResourceReport,
  type ResultLine,
  type Verb,
} from '../protocol/messages.js';
import { dstreamVersion } from '../version.js';
import { LOG_FORMAT_ENV, Logger, logFormatOf, secretValues } from '../log.js';
import { confirmRemoval } from './confirm.js';
import { Readiness } from '../metrics/readiness.js';
import type { DstreamMetrics } from '../metrics/registry.js';
import { reportToExecutor, serveStandalone, type Telemetry } from './telemetry.js';
import { parseProviderArgs, providerHelp } from './args.js';

export interface ProviderContext<C = Record<string, unknown>> {
  command: Verb;
  config: C;
  header: CommandHeader;
  /** True when started from a shell with options rather than by an executor. */
  standalone: boolean;
  /** Envelopes that followed the header on stdin (what an output provider consumes). */
  input: Readable;
  /** Envelopes (and checkpoint acknowledgements) for stdout. Do not end it; the host does. */
  output: Writable;
  /** Aborted on SIGINT/SIGTERM or when stdout's reader has gone: stop producing, flush, return. */
  signal: AbortSignal;
  /** A line on stderr: prefixed with the provider name, or a JSON record (--log-format json); secrets masked. */
  log(message: string): void;
  /**
   * run: this provider's readiness by part (`source`, `sink`), for `/readyz`. Always there;
   * it goes somewhere only when metrics were asked for.
   */
  health: Readiness;
  /**
   * run: the metrics to keep, when asked for (the executor's run header carries `metrics`, or
   * `--metrics-port` standalone); undefined otherwise, so a run without metrics pays nothing.
   */
  metrics?: DstreamMetrics;
}

type Answer = Omit<Partial<ResultLine>, 'status' | 'command'> | void;

export interface ProviderDefinition<C = Record<string, unknown>> {
  name: string;
  version?: string;
  description?: string;
  /** Config schema: validation, standalone options and --help. */
  config?: ConfigSchema;
  examples?: string[];
  /** What `destroy` removes beyond what `status` lists, said before a standalone destroy asks. */
  destroys?: string;
  /** Rules across fields the schema cannot say (one needs another): each problem as `key: what`. */
  checkConfig?: (config: C) => string[];
  /** How long a stop may take after a signal before the process gives up. Default 10 s. */
  graceMs?: number;
  run?: (ctx: ProviderContext<C>) => Promise<void>;
  discover?: (ctx: ProviderContext<C>) => Promise<Answer> | Answer;
  init?: (ctx: ProviderContext<C>) => Promise<Answer> | Answer;
  plan?: (ctx: ProviderContext<C>) => Promise<Answer> | Answer;
  status?: (ctx: ProviderContext<C>) => Promise<Answer> | Answer;
  destroy?: (ctx: ProviderContext<C>) => Promise<Answer> | Answer;
}

export interface ProviderIO {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
  argv: string[];
  env: Record<string, string | undefined>;
  /** Where SIGINT/SIGTERM come from. Default `process`; null to install no handlers. */
  signals?: NodeJS.EventEmitter | null;
  /**
   * stdin and stdout are object streams: the header, envelopes and protocol lines as values, not
   * NDJSON bytes. For providers composed in one process; argv must be empty.
   */
  objectMode?: boolean;
  /** Aborting it kills the provider at once, as SIGKILL kills a process: no drain, exit code 137. */
  kill?: AbortSignal;
  /**
   * In process: the executor's hand for metrics lines, which then go here instead of stdout and
   * never wait behind data that the output holds back.
   */
  onMetrics?: (line: MetricsLine) => void;
}

const SIGNAL_CODES = { SIGINT: ExitCodes.INTERRUPTED, SIGTERM: ExitCodes.TERMINATED } as const;

/** The schema's checks, then the definition's own rules across fields; one CONFIG error listing every problem. */
export function validateProviderConfig<C>(def: ProviderDefinition<C>, value: Record<string, unknown>, options: ValidateOptions = {}): C {
  const config = validateConfig(def.config ?? {}, value, options) as C;
  const problems = def.checkConfig?.(config) ?? [];
  if (problems.length > 0) {
    const path = options.path ?? 'config';
    const lines = problems.map((p) => `${path}.${p}`);
    throw new DstreamError(ErrorCodes.CONFIG, lines.length === 1 ? lines[0]! : `invalid configuration:\n  ${lines.join('\n  ')}`, { details: { problems: lines } });
  }
  return config;
}

/** Runs a provider on stdio and resolves with the exit code once stdout is flushed. */

/**
 * Runs a provider on stdio and resolves with the exit code once stdout is flushed. With a config
 * schema written in place, `ctx.config` is typed from it (`{ label: { type: 'string', default: 'rows' } }`
 * gives `config.label: string`).
 */
export function runProvider<const S extends ConfigSchema>(def: ProviderDefinition<ConfigOf<S>> & { config: S }, io?: Partial<ProviderIO>): Promise<number>;
export function runProvider<C = Record<string, unknown>>(def: ProviderDefinition<C>, io?: Partial<ProviderIO>): Promise<number>;
export async function runProvider<C = Record<string, unknown>>(def: ProviderDefinition<C>, io?: Partial<ProviderIO>): Promise<number> {
  const host = new ProviderHost(def, {
    stdin: io?.stdin ?? process.stdin,
    stdout: io?.stdout ?? process.stdout,
    stderr: io?.stderr ?? process.stderr,
    argv: io?.argv ?? process.argv.slice(2),
    env: io?.env ?? process.env,
    signals: io?.signals === undefined ? process : io.signals,
    objectMode: io?.objectMode === true,
    kill: io?.kill,
    onMetrics: io?.onMetrics,
  });
  return host.start();
}

class ProviderHost<C> {
  /** Where messages for stdout are written: an NDJSON encoder piped to stdout, or stdout itself in object mode. */
  private readonly out: EnvelopeEncoder | Writable;
  private readonly abort = new AbortController();
  private readonly verbs: Verb[];
  /** The stream stdin is piped into (decoder, or the command router in object mode), ended on a stop. */
  private inlet: Writable | undefined;
  private decoder: EnvelopeDecoder | undefined;
  /** In provider mode: passes through everything after the header, so it is the input of `run`. */
  private router: CommandRouter | undefined;
  /** Whether stdout may carry protocol lines (an error line on failure): not in pipes, not for older executors. */
  private protocolLines = true;
  private settle!: (code: number) => void;
  private settled = false;
  private stopCode: number | undefined;
  private stdoutGone = false;
  private telemetry: Telemetry | undefined;
  /** Standalone `--metrics-port` / `--metrics-host`. */
  private serveMetrics: { port: number; host?: string } | undefined;
  private logger: Logger;
  /** DSTREAM_LOG_FORMAT held a value that is not a format: said once the host has started. */
  private badLogFormat: unknown;

  constructor(
    private readonly def: ProviderDefinition<C>,
    private readonly io: ProviderIO,
  ) {
    this.out = io.objectMode ? io.stdout : encodeEnvelopes();
    this.verbs = VERBS.filter((v) => typeof def[v] === 'function');
    let format: ReturnType<typeof logFormatOf> = 'text';
    try {
      format = logFormatOf(io.env[LOG_FORMAT_ENV], LOG_FORMAT_ENV);
    } catch (err) {
      this.badLogFormat = err;
    }
    this.logger = new Logger({ stream: io.stderr, format, name: def.name, provider: def.name, skipNamedPrefix: true });
  }

  start(): Promise<number> {
    const done = new Promise<number>((resolve) => (this.settle = resolve));
    const { stdout, signals, kill } = this.io;
    if (this.out !== stdout) (this.out as EnvelopeEncoder).pipe(stdout, { end: false });
    this.out.on('error', (err) => this.fail(err));
    const onKill = () => this.kill();
    if (kill?.aborted) queueMicrotask(onKill);
    else kill?.addEventListener('abort', onKill, { once: true });
    stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') {
        // The reader went away (`| head -1`): nobody is left to tell; stop quietly.
        this.stdoutGone = true;
        this.abort.abort();
        this.finish(ExitCodes.OK);
      } else {
        this.fail(err);
      }
    });
    const onSignal = (sig: keyof typeof SIGNAL_CODES) => this.stop(sig);
    if (signals) {
      signals.on('SIGINT', onSignal);
      signals.on('SIGTERM', onSignal);
    }
    const restoreConsole = this.io.stdout === process.stdout ? consoleToStderr((line) => (this.logger.format === 'json' ? this.logger.info(line) : void this.io.stderr.write(`${line}\n`))) : () => {};
    try {
      if (this.badLogFormat !== undefined) throw this.badLogFormat;
      if (this.io.argv.length > 0) this.standalone();
      else this.providerMode();
    } catch (err) {
      this.fail(err);
    }
    return done.finally(() => {
      kill?.removeEventListener('abort', onKill);
      restoreConsole();
      if (signals) {
        signals.off('SIGINT', onSignal);
        signals.off('SIGTERM', onSignal);
      }
    });
  }

  private log = (message: string): void => this.logger.info(message);

  private context(header: CommandHeader, input: Readable, standalone: boolean): ProviderContext<C> {
    if (typeof header.task === 'string') this.logger = this.logger.child({ task: header.task });
    // Secrets given inline are masked even when the config is refused.
    const schema = this.def.config ?? {};
    this.logger.addSecrets(secretValues(header.config, (key) => schema[key]?.secret === true));
    const config = validateProviderConfig(this.def, header.config, { env: this.io.env });
    this.logger.addSecrets(secretValues(config, (key) => schema[key]?.secret === true));
    return { command: header.command, config, header, standalone, input, output: this.out, signal: this.abort.signal, log: this.log, health: new Readiness() };
  }

  /** Started by an executor: the first stdin line is the command header. */
  private providerMode(): void {
    const router = routeCommands(this.handlers(), { provider: this.def.name });
    this.router = router;
    if (this.io.objectMode) {
      this.inlet = router;
      this.io.stdin.on('error', (err) => router.destroy(err));
      this.io.stdin.pipe(router);
    } else {
      const decoder = decodeEnvelopes({ header: true });
      this.inlet = this.decoder = decoder;
      this.io.stdin.on('error', (err) => decoder.destroy(err));
      decoder.on('error', (err) => {
        router.destroy(err);
        this.fail(err);
      });
      this.io.stdin.pipe(decoder).pipe(router);
    }
    router.on('result', (line: ResultLine) => {
      if (line.status === 'error') this.logger.error(line.message ?? 'failed', typeof line.code === 'string' ? { code: line.code } : {});
      if (this.protocolLines) this.out.write(line);
      this.finish(router.exitCode);
    });
    router.on('error', (err) => this.fail(err));
  }

  private handlers(): CommandHandlers {
    const handlers: CommandHandlers = {};
    for (const verb of this.verbs) {
      if (verb === 'run') {
        handlers.run = (header) => {
          // An older executor, or a pipe: stdout carries data alone, no handshake, no error line.
          if (header.legacy || header.inPipe) this.protocolLines = false;
          const ctx = this.context(header, this.router!, header.inPipe === true);
          if (!header.legacy && !header.inPipe) this.out.write(READY);
          this.runInBackground(ctx);
        };
      } else {
        handlers[verb] = async (header) => {
          const ctx = this.context(header, this.router!, false);
          this.out.write(READY);
          return this.def[verb as LifecycleVerb]!(ctx);
        };
      }
    }
    return handlers;
  }

  /** Started from a shell with options: config from flags and environment, no handshake. */
  private standalone(): void {
    const schema = this.def.config ?? {};
    // stdout feeds the next process of the pipe: errors go to stderr, unless a lifecycle verb was
    // asked for, whose answer is a result line.
    this.protocolLines = false;
    const args = parseProviderArgs(schema, this.io.argv);
    if (args.logFormat !== undefined) this.logger = new Logger({ stream: this.io.stderr, format: logFormatOf(args.logFormat), name: this.def.name, provider: this.def.name, skipNamedPrefix: true });
    this.protocolLines = args.verb !== 'run';
    if (args.metricsPort !== undefined) this.serveMetrics = { port: args.metricsPort, ...(args.metricsHost !== undefined ? { host: args.metricsHost } : {}) };
    if (args.help) {
      this.out.end();
      this.io.stdout.write(providerHelp(this.def.name, this.def.description, schema, this.verbs, this.def.examples), () => this.finish(ExitCodes.OK));
      return;
    }
    if (args.version) {
      this.io.stdout.write(`${this.def.version ?? dstreamVersion()}\n`, () => this.finish(ExitCodes.OK));
      return;
    }
    const header: CommandHeader = { command: args.verb, config: args.config };
    if (args.verb === 'run') {
      if (this.def.run === undefined) throw unsupported(this.def.name, 'run', this.verbs);
      const decoder = decodeEnvelopes();
      this.inlet = this.decoder = decoder;
      this.io.stdin.on('error', (err) => decoder.destroy(err));
      const ctx = this.context(header, this.io.stdin.pipe(decoder), true);
      this.runInBackground(ctx);
      return;
    }
    const handler = this.def[args.verb];
    if (handler === undefined) throw unsupported(this.def.name, args.verb, this.verbs);
    const ctx = this.context(header, this.io.stdin, true);
    const confirmed = args.verb === 'destroy' ? this.confirmDestroy(ctx, args.yes) : Promise.resolve();
    confirmed.then(() => handler(ctx)).then(
      (answer) => {
        this.out.write(okLine(args.verb, answer));
        this.finish(ExitCodes.OK);
      },
      (err: unknown) => this.fail(err, args.verb),
    );
  }

  /** dstream's one rule for removals: list what goes (from status), then --yes or the name typed on a terminal. */
  private async confirmDestroy(ctx: ProviderContext<C>, yes: boolean): Promise<void> {
    const answer = this.def.status === undefined ? undefined : await this.def.status({ ...ctx, command: 'status' });
    const existing = ((answer?.resources ?? []) as ResourceReport[]).filter((r) => r.exists !== false).map((r) => `${r.kind} ${r.name}`);
    const items = [...existing, ...(this.def.destroys ? [this.def.destroys] : [])];
    await confirmRemoval({ stdin: this.io.stdin, stderr: this.io.stderr, log: this.logger }, { program: this.def.name, action: 'destroy', items, name: this.def.name, yes });
  }

  private runInBackground(ctx: ProviderContext<C>): void {
    const ended = () => this.telemetry?.end() ?? Promise.resolve();
    this.startTelemetry(ctx)
      .then(() => this.def.run!(ctx))
      .then(
        () => ended().then(() => this.finish(this.stopCode ?? ExitCodes.OK)),
        (err: unknown) => ended().then(() => this.fail(err, 'run'), () => this.fail(err, 'run')),
      );
  }

  /** Metrics and readiness, when asked for: lines for the executor, or endpoints of its own standalone. */
  private async startTelemetry(ctx: ProviderContext<C>): Promise<void> {
    const asked = ctx.header.metrics;
    if (this.serveMetrics !== undefined) {
      this.telemetry = await serveStandalone(ctx.health, this.serveMetrics.port, this.serveMetrics.host, this.log);
    } else if (this.protocolLines && typeof asked === 'object' && asked !== null) {
      const ms = (asked as { interval_ms?: unknown }).interval_ms;
      const onMetrics = this.io.onMetrics;
      const send = onMetrics
        ? (line: MetricsLine) => (onMetrics(line), true)
        : (line: MetricsLine) => !this.out.writableEnded && !this.out.destroyed && (this.out.write(line), true);
      this.telemetry = await reportToExecutor(send, ctx.health, typeof ms === 'number' && ms > 0 ? ms : undefined, onMetrics ? undefined : this.out);
    }
    if (this.settled) this.telemetry?.dispose();
    ctx.metrics = this.telemetry?.metrics;
  }

  /** SIGINT/SIGTERM: stop reading, let the provider drain, exit within the grace period. */
  private stop(sig: keyof typeof SIGNAL_CODES): void {
    if (this.stopCode !== undefined) {
      this.logger.warn(`${sig} again: exiting without waiting for the drain`);
      this.finish(ExitCodes.FAILURE, true);
      return;
    }
    this.stopCode = SIGNAL_CODES[sig];
    this.logger.warn(`${sig}: stopping; draining what is in flight (send it again to exit at once)`);
    this.abort.abort();
    if (this.inlet !== undefined) {
      this.io.stdin.unpipe(this.inlet);
      this.inlet.end();
    }
    const grace = this.def.graceMs ?? 10_000;
    setTimeout(() => {
      this.logger.error(`did not stop within ${grace} ms; exiting`);
      this.finish(ExitCodes.FAILURE, true);
    }, grace).unref();
  }

  /** Killed (the in-process SIGKILL): stop producing, drop what is in flight, exit 137 at once. */
  private kill(): void {
    if (this.settled) return;
    this.abort.abort();
    if (this.inlet !== undefined) {
      this.io.stdin.unpipe(this.inlet);
      this.inlet.destroy();
    }
    this.finish(ExitCodes.KILLED, true);
  }

  private fail(err: unknown, command?: string): void {
    if (this.settled) return;
    this.logger.error(messageOf(err), isDstreamError(err) ? { code: err.code } : {});
    if (this.protocolLines && !this.stdoutGone && !this.out.writableEnded) this.out.write(errorLine(err, command));
    this.finish(exitCodeFor(err));
  }

  /** Ends stdout's encoder, waits until the last byte is handed to stdout, then settles. */
  private finish(code: number, now = false): void {
    if (this.settled) return;
    this.settled = true;
    this.telemetry?.dispose();
    if (now || this.stdoutGone) {
      this.settle(code);
      return;
    }
    if (!this.out.writableEnded) this.out.end();
    if (this.out === this.io.stdout) {
      // Object mode: everything is in stdout's buffer, where the executor reads it.
      this.settle(code);
      return;
    }
    const enc = this.out as EnvelopeEncoder;
    const flush = () => this.io.stdout.write('', () => this.settle(code));
    if (enc.readableEnded) flush();
    else enc.once('end', flush);
  }
}

function unsupported(provider: string, verb: Verb, supported: Verb[]): DstreamError {
  return new DstreamError(ErrorCodes.UNSUPPORTED_COMMAND, `${provider} does not support "${verb}"; it supports ${supported.join(', ') || 'no commands'}`, {
    details: { command: verb, supported },
  });
}

/**
 * stdout belongs to the protocol: a stray console.log in provider code would corrupt it, so while
 * a provider runs, console.log/info/debug go to its log on stderr. Returns the undo.
 */
function consoleToStderr(log: (line: string) => void): () => void {
  const saved = { log: console.log, info: console.info, debug: console.debug };
  const toStderr = (...args: unknown[]) => log(format(...args));
  console.log = console.info = console.debug = toStderr;
  return () => Object.assign(console, saved);
}
