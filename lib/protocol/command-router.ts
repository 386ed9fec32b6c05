/**
 * routeCommands(): reads the first message (the command header) and dispatches it.
 * Lifecycle verbs go to their handler and the stream emits one result line; `run` calls its
 * handler and then passes every later message through. An unknown verb or a verb without a
 * handler produces an error result and a non-zero `exitCode`.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { DstreamError, ErrorCodes, isDstreamError } from '../errors.js';
import { exitCodeFor, ExitCodes } from './exit-codes.js';
import {
  errorLine,
  parseHeader,
  VERBS,
  type CommandHeader,
  type LifecycleVerb,
  type ResultLine,
  type Verb,
} from './messages.js';
import type { DuplexEvents, Listen } from '../events.js';

export type LifecycleHandler = (header: CommandHeader) => Promise<Omit<Partial<ResultLine>, 'status' | 'command'> | void> | Omit<Partial<ResultLine>, 'status' | 'command'> | void;

export type CommandHandlers = {
  /** Called with the header before data passes through; a throw fails the command. */
  run?: (header: CommandHeader) => void | Promise<void>;
} & Partial<Record<LifecycleVerb, LifecycleHandler>>;

export interface RouteCommandsOptions {
  /** Provider name for messages. */
  provider?: string;
}

type Mode = 'header' | 'run' | 'done';

/** `routeCommands()`'s events besides a Transform's: `'command'` with the command header read; `'result'` with the result line pushed. */
export interface CommandRouterEvents {
  command: [header: CommandHeader];
  result: [line: ResultLine];
}

export interface CommandRouter {
  on: Listen<CommandRouterEvents, this, DuplexEvents>;
  once: Listen<CommandRouterEvents, this, DuplexEvents>;
  off: Listen<CommandRouterEvents, this, DuplexEvents>;
}

export class CommandRouter extends Transform {
  /** The parsed header, once read. */
  header: CommandHeader | undefined;
  /** The result line of a lifecycle verb (or of a failure), once known. */
  result: ResultLine | undefined;
  /** 0 on success; set when the command failed. */
  exitCode: number = ExitCodes.OK;
  private mode: Mode = 'header';
  private readonly handlers: CommandHandlers;
  private readonly provider: string;

  constructor(handlers: CommandHandlers, options: RouteCommandsOptions = {}) {
    super({ objectMode: true });
    this.handlers = handlers;
    this.provider = options.provider ?? 'provider';
  }

  /** The verbs this provider has handlers for. */
  get supported(): Verb[] {
    return VERBS.filter((v) => typeof this.handlers[v] === 'function');
  }

  override _transform(chunk: unknown, _enc: BufferEncoding, callback: TransformCallback): void {
    if (this.mode === 'run') {
      callback(null, chunk);
      return;
    }
    if (this.mode === 'done') {
      // Input after a lifecycle command has no meaning; it is read and dropped so the writer never blocks.
      callback();
      return;
    }
    this.mode = 'done';
    let header: CommandHeader;
    try {
      header = parseHeader(chunk);
    } catch (err) {
      const command = (chunk as { command?: unknown } | null)?.command;
      this.finish(this.explain(err), typeof command === 'string' ? command : undefined);
      callback();
      return;
    }
    this.header = header;
    this.emit('command', header);
    const verb = header.command;
    const handler = this.handlers[verb];
    if (typeof handler !== 'function') {
      this.finish(
        new DstreamError(
          ErrorCodes.UNSUPPORTED_COMMAND,
          `${this.provider} does not support "${verb}"; it supports ${this.supported.join(', ') || 'no commands'}`,
          { details: { command: verb, supported: this.supported } },
        ),
        verb,
      );
      callback();
      return;
    }
    Promise.resolve()
      .then(() => (handler as (h: CommandHeader) => unknown)(header))
      .then(
        (out) => {
          if (verb === 'run') {
            this.mode = 'run';
            // In a pipe the first line was already a record.
            if (header.inPipe) this.push(chunk);
          } else {
            this.result = okLine(verb, out as object | undefined);
            this.push(this.result);
            this.emit('result', this.result);
          }
          callback();
        },
        (err: unknown) => {
          this.finish(err, verb);
          callback();
        },
      );
  }

  override _flush(callback: TransformCallback): void {
    if (this.mode === 'header') {
      this.finish(
        new DstreamError(
          ErrorCodes.PROTOCOL,
          `${this.provider} received no command header: the first line on stdin must be ` +
            '{"command":"run|discover|init|plan|status|destroy","config":{...}}',
        ),
      );
    }
    callback();
  }

  private explain(err: unknown): unknown {
    if (isDstreamError(err, ErrorCodes.UNKNOWN_COMMAND)) {
      return new DstreamError(
        ErrorCodes.UNKNOWN_COMMAND,
        `unknown command ${JSON.stringify(err.details.command)}; ${this.provider} supports ${this.supported.join(', ') || 'no commands'}`,
        { details: { ...err.details, supported: this.supported } },
      );
    }
    return err;
  }

  private finish(err: unknown, command?: string): void {
    this.mode = 'done';
    this.exitCode = exitCodeFor(err);
    const line = errorLine(err, command) as ResultLine;
    this.result = line;
    this.push(line);
    this.emit('result', line);
  }
}

/** `{"status":"ok","command":...}` first, then what the handler answered (which cannot override them). */
export function okLine(command: string, answer: object | undefined | void): ResultLine {
  return Object.assign({ status: 'ok', command }, answer ?? {}, { status: 'ok', command }) as ResultLine;
}

/** The command router every provider host uses. */
export function routeCommands(handlers: CommandHandlers, options?: RouteCommandsOptions): CommandRouter {
  return new CommandRouter(handlers, options);
}
