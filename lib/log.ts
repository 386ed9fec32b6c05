/**
 * dstream's one logger: the `dstream` CLI, the providers (runProvider) and the provider lines the
 * executor forwards all write through it. Two forms on stderr:
 *
 * - `text` (the default): `name: message`, for people (`dstream: ...`, `asb-sink: ...`).
 * - `json`: one object per line, `{"time","level","task","provider","message"}` and `code` when
 *   an error has one, for log collectors. `provider` is null on dstream's own lines. A failing
 *   provider's last stderr lines come as a `stderr` array, never as JSON text inside `message`.
 *
 * Neither form carries secrets: values given as secrets are masked wherever they appear, and so
 * are the secret parts of connection strings (Password=, SharedAccessKey=, ...) and URLs.
 */
import type { Writable } from 'node:stream';
import { DstreamError, ErrorCodes } from './errors.js';

export type LogFormat = 'text' | 'json';
export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json'];
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** The environment variable that sets the format where no flag does (and that providers started by dstream inherit). */
export const LOG_FORMAT_ENV = 'DSTREAM_LOG_FORMAT';

export const MASK = '***';

export interface LogFields {
  task?: string;
  provider?: string;
  code?: string;
  /**
   * A failing provider's last stderr lines. Text: under a heading after the message. JSON: an array
   * field, each line that is a JSON record (a provider logging JSON) as that object, others as strings.
   */
  stderr?: string[];
}

/** The heading of a provider's stderr tail inside an error message (text form). */
export const STDERR_TAIL_HEADING = '--- last lines of its stderr ---';

/** Stderr lines as data: a line that is a JSON object (a provider logging JSON) as that object, others as strings. */
export function stderrValues(lines: string[]): unknown[] {
  return lines.map((line) => parseJsonObject(line) ?? line);
}

/** A message without its stderr tail, and the tail's lines. */
export function splitStderrTail(message: string): { message: string; stderr: string[] } {
  const at = message.indexOf(`\n${STDERR_TAIL_HEADING}`);
  if (at === -1) return { message, stderr: [] };
  const rest = message.slice(at + STDERR_TAIL_HEADING.length + 2);
  return { message: message.slice(0, at), stderr: rest === '' ? [] : rest.split('\n') };
}

export interface LoggerOptions extends LogFields {
  stream: Writable;
  format?: LogFormat;
  /** The text form's prefix: `dstream`, `dstream route`, `asb-sink`. */
  name: string;
  /**
   * Text form: leave out the prefix when the message already starts with the name (a provider's
   * `asb-sink needs ...`). dstream's own lines always carry `dstream:`.
   */
  skipNamedPrefix?: boolean;
  /** Values never to print (passwords, keys, whole connection strings); a Set is shared, not copied. */
  secrets?: Iterable<string>;
  now?: () => Date;
}

/** Checks a --log-format / DSTREAM_LOG_FORMAT value. */
export function logFormatOf(value: string | undefined, from = '--log-format'): LogFormat {
  if (value === undefined || value === '') return 'text';
  if ((LOG_FORMATS as readonly string[]).includes(value)) return value as LogFormat;
  throw new DstreamError(ErrorCodes.INVALID_OPTION, `${from} must be one of ${LOG_FORMATS.join(', ')}; got ${JSON.stringify(value)}`);
}

/** The value of `--log-format X` / `--log-format=X` in argv, if given. */
export function logFormatArg(argv: readonly string[]): string | undefined {
  const i = argv.findIndex((a) => a === '--log-format' || a.startsWith('--log-format='));
  if (i === -1) return undefined;
  return argv[i]!.includes('=') ? argv[i]!.slice('--log-format='.length) : (argv[i + 1] ?? '');
}

// Key=value pairs of connection strings (ADO.NET, Service Bus, Storage) whose value is a secret.
const SECRET_PAIR = /\b(password|pwd|sharedaccesskey|accountkey|sharedaccesssignature|accesskey|client_?secret)(\s*=\s*)("[^"]*"|'[^']*'|[^;"'\s]+)/gi;
// user:password@ in URLs.
const URL_PASSWORD = /([a-z][a-z0-9+.-]*:\/\/[^:/@\s]+:)([^@\s]+)@/gi;

/** `text` with secrets masked: the given values, then connection-string secrets and URL passwords. */
export function redact(text: string, secrets: Iterable<string> = []): string {
  let out = text;
  // Longest first, so that a connection string is masked whole before the password inside it.
  // Each as it is and as it reads inside JSON (a provider logging its config): `a"b` and `a\"b`.
  const forms = [...secrets].filter((v) => v.length >= 4).flatMap((v) => [v, JSON.stringify(v).slice(1, -1)]);
  for (const s of [...new Set(forms)].sort((a, b) => b.length - a.length)) out = out.split(s).join(MASK);
  return out.replace(SECRET_PAIR, (_m, k: string, eq: string) => `${k}${eq}${MASK}`).replace(URL_PASSWORD, (_m, head: string) => `${head}${MASK}@`);
}

/** Config values that are secrets: fields the schema marks `secret`, and keys that name one. */
export function secretValues(config: unknown, isSecret: (key: string) => boolean = () => false): string[] {
  const found: string[] = [];
  const walk = (v: unknown, key: string) => {
    if (typeof v === 'string') {
      if (isSecret(key) || /password|secret|token|connection_?string|access_?key|sas/i.test(key)) found.push(v);
    } else if (Array.isArray(v)) for (const x of v) walk(x, key);
    else if (typeof v === 'object' && v !== null) for (const [k, x] of Object.entries(v)) walk(x, k);
  };
  walk(config, '');
  return found;
}

export class Logger {
  readonly format: LogFormat;
  readonly name: string;
  private readonly stream: Writable;
  private readonly fields: LogFields;
  private readonly secrets: Set<string>;
  private readonly now: () => Date;
  private readonly skipNamedPrefix: boolean;

  constructor(options: LoggerOptions) {
    this.stream = options.stream;
    this.format = options.format ?? 'text';
    this.name = options.name;
    this.fields = { ...(options.task === undefined ? {} : { task: options.task }), ...(options.provider === undefined ? {} : { provider: options.provider }) };
    this.secrets = options.secrets instanceof Set ? (options.secrets as Set<string>) : new Set(options.secrets ?? []);
    this.now = options.now ?? (() => new Date());
    this.skipNamedPrefix = options.skipNamedPrefix === true;
  }

  /** A logger writing to the same stream with other fields (a task, a provider, a prefix); secrets are shared. */
  child(fields: LogFields & { name?: string }): Logger {
    return new Logger({ stream: this.stream, format: this.format, name: fields.name ?? this.name, ...this.fields, ...fields, secrets: this.secrets, now: this.now, skipNamedPrefix: this.skipNamedPrefix });
  }

  /** More values never to print (a provider's config, once read). */
  addSecrets(values: Iterable<string>): void {
    for (const v of values) this.secrets.add(v);
  }

  /** `text` with this logger's secrets (and connection-string secrets) masked. */
  redact(text: string): string {
    return redact(text, this.secrets);
  }

  debug(message: string, fields?: LogFields): void {
    this.write('debug', message, fields);
  }
  info(message: string, fields?: LogFields): void {
    this.write('info', message, fields);
  }
  warn(message: string, fields?: LogFields): void {
    this.write('warn', message, fields);
  }
  error(message: string, fields?: LogFields): void {
    this.write('error', message, fields);
  }

  /**
   * A stderr line of a provider process, forwarded. Text: under the provider's name (unless it
   * already starts with it). JSON: a provider that logs JSON keeps its fields, with task and
   * provider set; a plain line becomes the message of an `info` record.
   */
  forward(line: string, provider: string, shortName: string): void {
    if (this.format === 'json') {
      const parsed = parseRecord(line);
      if (parsed !== undefined) {
        const level = (['debug', 'info', 'warn', 'error'] as const).find((l) => l === parsed.level) ?? 'info';
        const code = typeof parsed.code === 'string' ? { code: parsed.code } : {};
        this.write(level, String(parsed.message), { provider, ...code });
        return;
      }
      this.write('info', line, { provider });
      return;
    }
    const own = [shortName, shortName.replace(/\.(m?js|cjs)$/, '')].find((n) => line.startsWith(`${n}: `));
    this.stream.write(`${redact(own ? line : `${shortName}: ${line}`, this.secrets)}\n`);
  }

  private write(level: LogLevel, message: string, fields: LogFields = {}): void {
    const tail = (fields.stderr ?? []).map((line) => redact(line, this.secrets));
    if (this.format === 'json') {
      const f = { ...this.fields, ...fields };
      const stderr = tail.length === 0 ? {} : { stderr: stderrValues(tail) };
      const record = { time: this.now().toISOString(), level, task: f.task ?? null, provider: f.provider ?? null, message: redact(message, this.secrets), ...(f.code === undefined ? {} : { code: f.code }), ...stderr };
      this.stream.write(`${JSON.stringify(record)}\n`);
      return;
    }
    const text = redact(message, this.secrets) + (tail.length === 0 ? '' : `\n${STDERR_TAIL_HEADING}\n${tail.join('\n')}`);
    // A message that already starts with the name (`asb-sink needs ...`) is not prefixed twice.
    const named = this.skipNamedPrefix && (text.startsWith(`${this.name} `) || text.startsWith(`${this.name}:`));
    this.stream.write(named ? `${text}\n` : `${this.name}: ${text}\n`);
  }
}

function parseRecord(line: string): { level?: unknown; message: unknown; code?: unknown } | undefined {
  const v = parseJsonObject(line);
  return v !== undefined && 'message' in v ? (v as { message: unknown }) : undefined;
}

function parseJsonObject(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const v = JSON.parse(line) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    // Not JSON after all: a plain line that happens to start with a brace.
    return undefined;
  }
}
