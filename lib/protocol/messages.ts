/**
 * The line protocol between dstream and provider executables. docs/protocol.md is the prose;
 * lib/protocol/schemas/*.json are the JSON Schemas; this file is the code both agree with.
 */
import { DstreamError, ErrorCodes } from '../errors.js';
import { describe } from '../envelope/validate.js';

export const PROTOCOL_VERSION = 1;

export const VERBS = ['run', 'discover', 'init', 'plan', 'status', 'destroy'] as const;
export type Verb = (typeof VERBS)[number];
export type LifecycleVerb = Exclude<Verb, 'run'>;

export function isVerb(value: unknown): value is Verb {
  return typeof value === 'string' && (VERBS as readonly string[]).includes(value);
}

/** A stream (table) an input provider will emit, as `discover` reports it. */
export interface StreamDescriptor {
  name: string;
  schema?: string;
  database?: string;
  keys?: string[];
  columns?: Array<{ name: string; type?: string; nullable?: boolean }>;
  [key: string]: unknown;
}

export interface CommandHeader {
  command: Verb;
  config: Record<string, unknown>;
  protocol?: number;
  /** Stored checkpoint position handed to an input provider on `run`. */
  state?: unknown;
  /** run, to the input: where the executor keeps positions (`{"kind":"sqlserver","table":...}`). */
  store?: { kind: string; table?: string };
  /** run, to the output: when the position the input resumes from was stored (ISO time). */
  savedAt?: string;
  /** What the input provider discovered, handed to an output provider. */
  streams?: StreamDescriptor[];
  task?: string;
  /** True when the first line was a bare config (older executors): no handshake is sent back. */
  legacy?: boolean;
  /**
   * True when the first line was already a data envelope: the provider sits in a Unix pipe
   * (`... | dstream route | asb-sink`) and runs standalone, from its environment; that line is data.
   */
  inPipe?: boolean;
  /**
   * run: the executor serves metrics and asks for a metrics line this often. Optional: a provider
   * that does not know it ignores it, and is then simply not in the metrics.
   */
  metrics?: { interval_ms?: number };
  [key: string]: unknown;
}

/** The `type` of a metrics line, which a provider writes only when its header asked for them. */
export const METRICS_TYPE = 'metrics';

/**
 * `{"type":"metrics","data":{"health":{...},"metrics":[...]}}`: a provider's readiness by part and
 * its metrics as prom-client JSON (cumulative, so a lost or late line loses nothing).
 */
export interface MetricsLine {
  type: typeof METRICS_TYPE;
  data: { health?: Record<string, { ready: boolean; reason?: string }>; metrics?: unknown[] };
}

export function isMetricsLine(v: unknown): v is MetricsLine {
  return typeof v === 'object' && v !== null && (v as { type?: unknown }).type === METRICS_TYPE && typeof (v as { data?: unknown }).data === 'object';
}

export interface ReadyLine {
  status: 'ready';
  protocol: number;
}

export interface ResourceReport {
  kind: string;
  name: string;
  /**
   * blocked: init (or destroy) cannot make it so; `warnings` say what to fix first. exists: there
   * already, outside the engine's state, and this task's (init adopts it). replace: only a new
   * resource could make it so (init keeps the old one; `warnings` say why).
   */
  action?: 'create' | 'update' | 'replace' | 'delete' | 'unchanged' | 'exists' | 'exists-unmanaged' | 'blocked';
  [key: string]: unknown;
}

export interface ResultLine {
  status: 'ok' | 'error';
  command: string;
  message?: string;
  code?: string;
  resources?: ResourceReport[];
  [key: string]: unknown;
}

/** A handshake failure; also the shape of a failed result line, which carries `command` too. */
export interface ErrorLine {
  status: 'error';
  message: string;
  code?: string;
  command?: string;
}

export const READY: ReadyLine = Object.freeze({ status: 'ready', protocol: PROTOCOL_VERSION }) as ReadyLine;

/**
 * Reads the first line a provider received. A line with `command` is a command header; a data
 * envelope means the provider is in a pipe (`inPipe`); any other line is an older executor's bare
 * config and means `run`.
 */
export function parseHeader(value: unknown): CommandHeader {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new DstreamError(ErrorCodes.PROTOCOL, `the command header must be a JSON object, got ${describe(value)}`);
  }
  const v = value as Record<string, unknown>;
  if (!('command' in v)) {
    // A pipe started the provider without options: this line is the first record, not config.
    if ('data' in v && ('metadata' in v || 'type' in v || 'source' in v)) return { command: 'run', config: {}, inPipe: true };
    return { command: 'run', config: v, legacy: true };
  }
  if (!isVerb(v.command)) {
    throw new DstreamError(
      ErrorCodes.UNKNOWN_COMMAND,
      `unknown command ${JSON.stringify(v.command)}; the protocol knows ${VERBS.join(', ')}`,
      { details: { command: v.command } },
    );
  }
  const config = v.config ?? {};
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new DstreamError(ErrorCodes.PROTOCOL, `"config" in the command header must be an object, got ${describe(config)}`);
  }
  if (v.protocol !== undefined) {
    if (!Number.isInteger(v.protocol)) {
      throw new DstreamError(ErrorCodes.PROTOCOL, `"protocol" must be an integer, got ${describe(v.protocol)}`);
    }
    if ((v.protocol as number) > PROTOCOL_VERSION) {
      throw new DstreamError(
        ErrorCodes.PROTOCOL,
        `the executor speaks protocol ${v.protocol as number}; this provider speaks ${PROTOCOL_VERSION}: upgrade the provider`,
      );
    }
  }
  if (v.streams !== undefined && !Array.isArray(v.streams)) {
    throw new DstreamError(ErrorCodes.PROTOCOL, `"streams" must be a list, got ${describe(v.streams)}`);
  }
  return { ...v, command: v.command, config: config as Record<string, unknown> };
}

export function header(command: Verb, config: Record<string, unknown>, extra: Partial<CommandHeader> = {}): CommandHeader {
  return { command, config, protocol: PROTOCOL_VERSION, ...extra };
}

export function errorLine(err: unknown, command?: string): ErrorLine {
  const message = err instanceof Error ? err.message : String(err);
  const line: ErrorLine = { status: 'error', message };
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') line.code = code;
  if (command !== undefined) line.command = command;
  return line;
}

/**
 * Classifies a provider's first stdout line. `legacy` means it was not a handshake: an older
 * provider that starts with data, and that line is data.
 */
export function readHandshake(value: unknown): { kind: 'ready'; protocol: number } | { kind: 'error'; message: string; code?: string } | { kind: 'legacy' } {
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const v = value as Record<string, unknown>;
    if (v.status === 'ready' && !('data' in v)) return { kind: 'ready', protocol: typeof v.protocol === 'number' ? v.protocol : 0 };
    if (v.status === 'error' && typeof v.message === 'string' && !('data' in v)) {
      return typeof v.code === 'string' ? { kind: 'error', message: v.message, code: v.code } : { kind: 'error', message: v.message };
    }
  }
  return { kind: 'legacy' };
}
