/**
 * Standalone mode: a provider started from a shell with flags. `--batch-size 10` sets config key
 * `batch_size`; `--flag` / `--no-flag` set booleans; a list takes commas or repeats. An optional
 * first word names the verb (`mssql-cdc discover --connection-string ...`); default `run`.
 */
import { DstreamError, ErrorCodes } from '../errors.js';
import { coerce, didYouMean, type ConfigSchema, type FieldSchema } from '../config/schema.js';
import { isVerb, VERBS, type Verb } from '../protocol/messages.js';

export interface ProviderArgs {
  verb: Verb;
  config: Record<string, unknown>;
  help: boolean;
  version: boolean;
  /** destroy: confirmed on the command line. */
  yes: boolean;
  /** run: serve /metrics, /healthz and /readyz on this port. */
  metricsPort?: number;
  /** With metricsPort: the address to listen on (default every interface). */
  metricsHost?: string;
  /** --log-format text|json, when given. */
  logFormat?: string;
}

export function flagName(key: string): string {
  return `--${key.replaceAll('_', '-')}`;
}

export function parseProviderArgs(schema: ConfigSchema, argv: readonly string[]): ProviderArgs {
  const out: ProviderArgs = { verb: 'run', config: {}, help: false, version: false, yes: false };
  const byFlag = new Map<string, [string, FieldSchema]>(Object.entries(schema).map(([k, f]) => [flagName(k), [k, f]]));
  let i = 0;
  if (argv[0] !== undefined && !argv[0].startsWith('-')) {
    if (!isVerb(argv[0])) throw usage(`unknown command "${argv[0]}"; use one of ${VERBS.join(', ')}`);
    out.verb = argv[0];
    i = 1;
  }
  for (; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      out.help = true;
      continue;
    }
    if (arg === '--version') {
      out.version = true;
      continue;
    }
    if (arg === '--standalone') continue;
    const hostOption = /^--metrics-(port|host)(?:=(.*))?$/.exec(arg);
    if (hostOption !== null && !byFlag.has(`--metrics-${hostOption[1]}`)) {
      const raw = hostOption[2] ?? argv[++i];
      if (raw === undefined || raw === '') throw usage(`option --metrics-${hostOption[1]} needs a value`);
      if (hostOption[1] === 'host') out.metricsHost = raw;
      else {
        const port = Number(raw);
        if (!Number.isInteger(port) || port < 0 || port > 65535) throw usage(`option --metrics-port must be a port number (0-65535); got ${JSON.stringify(raw)}`);
        out.metricsPort = port;
      }
      continue;
    }
    if ((arg === '--log-format' || arg.startsWith('--log-format=')) && !byFlag.has('--log-format')) {
      const value = arg.includes('=') ? arg.slice('--log-format='.length) : argv[++i];
      if (value === undefined) throw usage('option --log-format needs a value (text or json)');
      out.logFormat = value;
      continue;
    }
    if (arg === '--yes' && !byFlag.has('--yes')) {
      out.yes = true;
      continue;
    }
    if (!arg.startsWith('--')) throw usage(`unexpected argument "${arg}"`);
    const eq = arg.indexOf('=');
    const name = eq === -1 ? arg : arg.slice(0, eq);
    let entry = byFlag.get(name);
    let negated = false;
    if (entry === undefined && name.startsWith('--no-')) {
      entry = byFlag.get(`--${name.slice(5)}`);
      negated = entry?.[1].type === 'boolean';
      if (!negated) entry = undefined;
    }
    if (entry === undefined) {
      const guess = didYouMean(name, [...byFlag.keys()]);
      throw usage(`unknown option ${name}${guess ? `; did you mean ${guess}?` : ''} (see --help)`);
    }
    const [key, field] = entry;
    if (field.type === 'boolean' && eq === -1) {
      out.config[key] = !negated;
      continue;
    }
    const raw = eq === -1 ? argv[++i] : arg.slice(eq + 1);
    if (raw === undefined) throw usage(`option ${name} needs a value`);
    const value = coerce(field, raw);
    const prev = out.config[key];
    out.config[key] = field.type === 'string[]' && Array.isArray(prev) ? [...prev, ...(value as string[])] : value;
  }
  return out;
}

function usage(message: string): DstreamError {
  return new DstreamError(ErrorCodes.CONFIG, message);
}

/** --help text generated from the schema. */
export function providerHelp(name: string, description: string | undefined, schema: ConfigSchema, verbs: readonly Verb[], examples: readonly string[] = []): string {
  const lines = [`Usage: ${name} [${verbs.join('|')}] [options]`, ''];
  if (description) lines.push(description, '');
  lines.push(
    'Without options, reads a command header as the first line of stdin (started by `dstream run`).',
    'With options (or --standalone), runs from them: the shape for Unix pipes.',
    '',
    'Options:',
  );
  const rows: Array<[string, string]> = Object.entries(schema).map(([key, f]) => {
    const flag = `${flagName(key)}${f.type === 'boolean' ? '' : ` <${f.type === 'string[]' ? 'a,b,...' : f.type}>`}`;
    const notes = [
      f.description ?? '',
      f.enum ? `one of ${f.enum.join(', ')}` : '',
      f.default !== undefined && !f.secret ? `default ${JSON.stringify(f.default)}` : '',
      f.env ? `env ${f.env}` : '',
      f.required ? 'required' : '',
    ].filter((s) => s.length > 0);
    return [flag, notes.join('; ')];
  });
  rows.push(
    ['--standalone', 'run from options and environment with no options given'],
    ['--log-format <text|json>', 'log lines on stderr as text (default) or one JSON object each; env DSTREAM_LOG_FORMAT'],
  );
  if (verbs.includes('run')) {
    rows.push(['--metrics-port <integer>', 'run: serve Prometheus metrics at /metrics, and /healthz, /readyz for probes, on this port'], ['--metrics-host <address>', 'with --metrics-port: listen on this address only (default every interface)']);
  }
  rows.push(['--help', 'show this help'], ['--version', 'show the version']);
  if (verbs.includes('destroy')) rows.push(['--yes', 'destroy: do not ask (it lists what it removes, then asks on a terminal)']);
  const width = Math.max(...rows.map(([f]) => f.length)) + 2;
  for (const [flag, text] of rows) lines.push(`  ${flag.padEnd(width)}${text}`);
  if (examples.length > 0) lines.push('', 'Examples:', ...examples.map((e) => `  ${e}`));
  return `${lines.join('\n')}\n`;
}
