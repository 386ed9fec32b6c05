/**
 * dstream.hcl -> tasks. Templating first (template.ts), then HCL 2: a file of literals through
 * hcl-literal.ts, anything else through @cdktn/hcl2json (HCL's own parser in WASM: syntax errors
 * come with file:line,column; hcl2-parser gave an empty error and no position), then the task structure, checked with positions and did-you-mean:
 *
 *   task "name" {
 *     type = "providers"
 *     input  { provider = "generator"  config { ... } }      # built-in provider
 *     output { provider_path = "./bin/asb-sink"  config { ... } }   # relative to this file
 *   }
 */
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { DstreamError, ErrorCodes } from '../errors.js';
import { didYouMean, validateConfig, type ConfigSchema } from './schema.js';
import { renderTemplate } from './template.js';
import { parseLiteralHcl } from './hcl-literal.js';

export interface Position {
  line: number;
  column: number;
}

export interface ProviderRef {
  /** A provider dstream ships (run in-process). */
  provider?: string;
  /** An executable speaking the protocol, absolute (resolved against the config file). */
  providerPath?: string;
  config: Record<string, unknown>;
  /** Where the block starts in the task file, for messages. */
  line?: number;
  /** How long to wait for its handshake (handshake_timeout = "2m", or seconds); default 30 s. */
  handshakeTimeoutMs?: number;
  /** Where each attribute is written (`provider`, `provider_path`, `config`, and `config.<key>`), for messages. */
  at?: Record<string, Position>;
}

/** Where the task's position is kept: `state { store = "file" | "sqlserver" ... }`. */
export interface StateConfig {
  store: 'file' | 'sqlserver';
  /** file: the state directory (default $DSTREAM_STATE_DIR or ~/.dstream). */
  dir?: string;
  /** sqlserver: the database holding the checkpoint table. */
  connection_string?: string;
  /** sqlserver: schema.table (default dstream.checkpoints). */
  table?: string;
}

export const STATE_SCHEMA = {
  store: { type: 'string', enum: ['file', 'sqlserver'], default: 'file', description: 'file (a JSON file per task) or sqlserver (a table, shared by workers)' },
  dir: { type: 'string', description: 'file: state directory' },
  connection_string: { type: 'string', secret: true, description: 'sqlserver: connection string of the database with the checkpoint table' },
  table: { type: 'string', description: 'sqlserver: checkpoint table (default dstream.checkpoints)' },
} satisfies ConfigSchema;

/** `metrics { port = 9464 }`: serve /metrics, /healthz and /readyz while the task runs. */
export interface MetricsConfig {
  port: number;
  /** The address to listen on (default every interface, so probes reach the pod's address). */
  host?: string;
}

export const METRICS_SCHEMA = {
  port: { type: 'integer', minimum: 0, maximum: 65535, required: true, description: 'port for /metrics, /healthz and /readyz (0: any free port)' },
  host: { type: 'string', description: 'address to listen on (default every interface; 127.0.0.1 for this machine only)' },
} satisfies ConfigSchema;

export interface TaskConfig {
  name: string;
  /** The directory of the task file: relative paths and the default state directory are taken from here. */
  dir?: string;
  type: 'providers';
  input: ProviderRef;
  output: ProviderRef;
  state?: StateConfig;
  metrics?: MetricsConfig;
  /** Where the task is declared, for messages. */
  file: string;
  line: number;
}

export interface TaskFile {
  file: string;
  tasks: TaskConfig[];
  /**
   * Every task the file declares, in file order: also those left out of `tasks` for problems of their
   * own when the file was loaded for another task (LoadOptions.task). Absent: the names in `tasks`.
   */
  declared?: string[];
}

export interface LoadOptions {
  /** Check the file without the secrets: a missing {{ env }} variable reads as a placeholder (validate --skip-env). */
  skipEnv?: boolean;
}

type Block = Record<string, unknown>;

class Locator {
  private readonly lines: string[];
  constructor(
    readonly file: string,
    text: string,
    /** Lines where validate --skip-env put a placeholder for a missing variable. */
    private readonly placeholders: ReadonlySet<number> = new Set(),
  ) {
    this.lines = text.split('\n');
  }

  /** The value on this line is (partly) a placeholder: it stands for a secret, not checked here. */
  placeholderOn(line: number): boolean {
    return this.placeholders.has(line);
  }

  /** The first line at or after `from` (1-based) where `key` starts an attribute or block. */
  find(key: string, from = 1, label?: string): { line: number; column: number } {
    const re = label === undefined ? new RegExp(`^(\\s*)${escape(key)}\\s*(=|\\{|")`) : new RegExp(`^(\\s*)${escape(key)}\\s+"${escape(label)}"`);
    for (let i = Math.max(0, from - 1); i < this.lines.length; i++) {
      const m = re.exec(this.lines[i]!);
      if (m) return { line: i + 1, column: m[1]!.length + 1 };
    }
    return { line: from, column: 1 };
  }

  /** Where `text` first appears between lines `from` and `to` (1-based). */
  findText(text: string, from: number, to: number): { line: number; column: number } {
    for (let i = from - 1; i < Math.min(to, this.lines.length); i++) {
      const col = this.lines[i]!.indexOf(text);
      if (col >= 0) return { line: i + 1, column: col + 1 };
    }
    return { line: from, column: 1 };
  }

  error(at: { line: number; column: number }, message: string): DstreamError {
    return configError(this.file, at, message);
  }
}

/** A task file error at `file:line:column`, the one position format of every task file message. */
export function configError(file: string, at: Position, message: string, cause?: unknown): DstreamError {
  return new DstreamError(ErrorCodes.CONFIG, `${file}:${at.line}:${at.column}: ${message}`, { cause, details: { file, ...at } });
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

export interface LoadOptions {
  /**
   * The task about to be used: problems confined to other tasks (an unset environment variable, a
   * feature of the original dstream that dstream does not have) do not stop it. Without it, every
   * task must be good.
   */
  task?: string;
}

/** Loads and checks a task file. */
export async function loadTaskFile(path: string, env: Record<string, string | undefined> = process.env, options: LoadOptions = {}): Promise<TaskFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new DstreamError(
      ErrorCodes.CONFIG,
      code === 'ENOENT' ? `no task file at ${path}: create dstream.hcl, or name one with --config FILE (or DSTREAM_CONFIG)` : `could not read ${path}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  return parseTaskFile(text, path, env, options);
}

/** Top-level blocks of the original dstream's task files, ignored: what uses them is refused where it is used. */
const ORIGINAL_TOP_LEVEL = ['locals', 'dstream'];

export async function parseTaskFile(source: string, file: string, env: Record<string, string | undefined> = process.env, options: LoadOptions = {}): Promise<TaskFile> {
  const missing: Array<{ err: DstreamError; line: number }> = [];
  const placeholders = new Set<number>();
  const text = renderTemplate(source, env, file, { placeholders: options.skipEnv === true, onPlaceholder: (line) => placeholders.add(line), onMissing: (err, line) => missing.push({ err, line }) });
  if (options.task === undefined && missing.length > 0) throw missing[0]!.err;
  const at = new Locator(file, text, placeholders);
  // A file of literals (most task files) is read in JavaScript; anything else, and every error,
  // goes to the HCL parser (Go in WebAssembly, ~100 MB), loaded only then.
  let doc = parseLiteralHcl(text) as Block | undefined;
  if (doc === undefined) {
    try {
      const { parse } = await import('@cdktn/hcl2json');
      doc = (await parse(file, text)) as Block;
    } catch (err) {
      throw hclError(err, file);
    }
  }
  for (const key of Object.keys(doc)) {
    if (key !== 'task' && !ORIGINAL_TOP_LEVEL.includes(key)) throw at.error(at.find(key), `unknown block or attribute "${key}"${hint(key, ['task'])}; a task file holds task "<name>" { ... } blocks`);
  }
  const entries = Object.entries((doc.task ?? {}) as Record<string, Block[] | Record<string, Block[]>>).map(([name, blocks]) => ({ name, blocks, where: at.find('task', 1, name) }));
  // A task's lines run to the next task: what goes wrong there is that task's problem.
  const starts = entries.map((e) => e.where.line).sort((a, b) => a - b);
  const endOf = (line: number) => (starts.find((l) => l > line) ?? Number.MAX_SAFE_INTEGER) - 1;
  const orphan = missing.find((m) => m.line < (starts[0] ?? Number.MAX_SAFE_INTEGER));
  if (orphan !== undefined) throw orphan.err;
  const tasks: TaskConfig[] = [];
  for (const { name, blocks, where } of entries) {
    try {
      if (!Array.isArray(blocks)) throw at.error(where, `task "${name}" "${Object.keys(blocks)[0]}" has two labels; a task has one: task "name" { ... }`);
      const unset = missing.find((m) => m.line >= where.line && m.line <= endOf(where.line));
      if (unset !== undefined) throw unset.err;
      if (blocks.length > 1) throw at.error(at.find('task', where.line + 1, name), `task "${name}" is declared twice`);
      usesLocals(at, name, blocks[0]!, where.line, endOf(where.line));
      tasks.push(readTask(at, name, blocks[0]!, where.line, dirname(resolve(file))));
    } catch (err) {
      if (options.task === undefined || options.task === name) throw err;
    }
  }
  if (tasks.length === 0 && options.task === undefined) throw at.error({ line: 1, column: 1 }, 'no task blocks: declare at least one task "<name>" { ... }');
  return { file, tasks, declared: entries.map((e) => e.name) };
}

/** `locals { }` of the original dstream: HCL hands `local.x` over as the text "${local.x}". */
function usesLocals(at: Locator, task: string, block: Block, from: number, to: number): void {
  const found = /\$\{(local\.[\w-]+)/.exec(JSON.stringify(block));
  if (found === null) return;
  const pos = at.findText(found[1]!, from, to);
  throw at.error(pos, `task "${task}": locals are not supported (${found[1]}); write the value in place, or take it from the environment with {{ env "NAME" }}`);
}

function readTask(at: Locator, name: string, block: Block, line: number, baseDir: string): TaskConfig {
  if (block.type === 'plugin') {
    throw at.error(at.find('type', line), `task "${name}": type "plugin" (the original dstream's gRPC plugins) is not supported; use type = "providers" with input { ... } and output { ... } blocks naming provider executables (provider_path) or built-in providers (provider)`);
  }
  for (const key of ['plugin_path', 'plugin_ref', 'config']) {
    if (key in block) {
      throw at.error(
        at.find(key, line),
        `task "${name}": ${key === 'config' ? 'a task-level config block' : key} (from the original dstream's plugin tasks) is not supported; put each provider's settings in input { config { ... } } and output { config { ... } }`,
      );
    }
  }
  for (const key of Object.keys(block)) {
    if (!TASK_KEYS.includes(key)) throw at.error(at.find(key, line), `task "${name}": unknown "${key}"${hint(key, TASK_KEYS)}`);
  }
  const type = block.type ?? 'providers';
  if (type !== 'providers') {
    throw at.error(at.find('type', line), `task "${name}": type ${JSON.stringify(type)} is not supported; use type = "providers" (input and output provider executables or built-ins)`);
  }
  const side = (which: 'input' | 'output'): ProviderRef => {
    const blocks = block[which] as Block[] | undefined;
    if (blocks === undefined) throw at.error({ line, column: 1 }, `task "${name}" has no ${which} block: add ${which} { provider = "..." } or ${which} { provider_path = "..." }`);
    if (blocks.length > 1) throw at.error(at.find(which, at.find(which, line).line + 1), `task "${name}" has more than one ${which} block`);
    return readProvider(at, `task "${name}" ${which}`, blocks[0]!, at.find(which, line), baseDir);
  };
  const state = readState(at, name, block.state, line, baseDir);
  const metrics = readMetrics(at, name, block.metrics, line);
  return { name, dir: baseDir, type: 'providers', input: side('input'), output: side('output'), ...(state ? { state } : {}), ...(metrics ? { metrics } : {}), file: at.file, line };
}

const TASK_KEYS = ['type', 'input', 'output', 'state', 'metrics'];

function readMetrics(at: Locator, task: string, value: unknown, line: number): MetricsConfig | undefined {
  if (value === undefined) return undefined;
  const blocks = Array.isArray(value) ? (value as Block[]) : [value as Block];
  const pos = at.find('metrics', line);
  if (blocks.length > 1) throw at.error(at.find('metrics', pos.line + 1), `task "${task}" has more than one metrics block`);
  try {
    return validateConfig(METRICS_SCHEMA, blocks[0] ?? {}, { path: `task "${task}" metrics` }) as unknown as MetricsConfig;
  } catch (err) {
    throw at.error(pos, (err as Error).message);
  }
}

function readState(at: Locator, task: string, value: unknown, line: number, baseDir: string): StateConfig | undefined {
  if (value === undefined) return undefined;
  const blocks = Array.isArray(value) ? (value as Block[]) : [value as Block];
  const pos = at.find('state', line);
  if (blocks.length > 1) throw at.error(at.find('state', pos.line + 1), `task "${task}" has more than one state block`);
  let state: StateConfig;
  try {
    state = validateConfig(STATE_SCHEMA, blocks[0] ?? {}, { path: `task "${task}" state` }) as unknown as StateConfig;
  } catch (err) {
    throw at.error(pos, (err as Error).message);
  }
  // validate --skip-env: a connection string from an unset variable is there, only not known.
  const fromEnv = 'connection_string' in (blocks[0] ?? {}) && at.placeholderOn(at.find('connection_string', pos.line).line);
  if (state.store === 'sqlserver' && !state.connection_string && !fromEnv) {
    throw at.error(pos, `task "${task}" state: store = "sqlserver" needs connection_string (for example "{{ env "MSSQL_CONNECTION_STRING" }}")`);
  }
  if (state.dir !== undefined) state.dir = resolve(baseDir, state.dir);
  return state;
}

function readProvider(at: Locator, what: string, block: Block, pos: { line: number; column: number }, baseDir: string): ProviderRef {
  const line = pos.line;
  const known = ['provider', 'provider_path', 'config', 'handshake_timeout'];
  if ('provider_ref' in block) {
    throw at.error(
      at.find('provider_ref', line),
      `${what}: provider_ref (a provider pulled from an OCI registry by the original dstream) is not supported; download the provider and give its path with provider_path, or use a built-in provider with provider`,
    );
  }
  for (const key of Object.keys(block)) {
    if (!known.includes(key)) throw at.error(at.find(key, line), `${what}: unknown "${key}"${hint(key, known)}`);
  }
  const { provider, provider_path: path } = block;
  if ((provider === undefined) === (path === undefined)) throw at.error(pos, `${what}: give exactly one of provider (built-in) or provider_path (executable)`);
  for (const [key, v] of [['provider', provider], ['provider_path', path]] as const) {
    if (v !== undefined && (typeof v !== 'string' || v.length === 0)) throw at.error(at.find(key, line), `${what}: ${key} must be a non-empty string`);
  }
  let config: unknown = block.config ?? {};
  if (Array.isArray(config)) {
    if (config.length > 1) throw at.error(at.find('config', at.find('config', line).line + 1), `${what}: more than one config block`);
    config = config[0] ?? {};
  }
  if (typeof config !== 'object' || config === null) throw at.error(at.find('config', line), `${what}: config must be a block: config { key = value }`);
  const configAt = block.config === undefined ? pos : at.find('config', line);
  const where: Record<string, Position> = { block: pos, config: configAt };
  for (const key of ['provider', 'provider_path'] as const) if (block[key] !== undefined) where[key] = at.find(key, line);
  for (const key of Object.keys(config as object)) where[`config.${key}`] = at.find(key, configAt.line);
  const ref: ProviderRef = { config: config as Record<string, unknown>, line: configAt.line, at: where };
  if (block.handshake_timeout !== undefined) ref.handshakeTimeoutMs = durationMs(block.handshake_timeout, () => at.error(at.find('handshake_timeout', line), `${what}: handshake_timeout must be a duration such as "90s", "2m" or a number of seconds; got ${JSON.stringify(block.handshake_timeout)}`));
  if (provider !== undefined) ref.provider = provider as string;
  if (path !== undefined) ref.providerPath = resolve(baseDir, path as string);
  return ref;
}

/** `"90s"`, `"2m"`, `"500ms"`, or a number of seconds -> milliseconds. */
function durationMs(v: unknown, bad: () => Error): number {
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) return v * 1000;
  const m = typeof v === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(v) : null;
  if (m === null || Number(m[1]) <= 0) throw bad();
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
}

function hint(word: string, known: string[]): string {
  const guess = didYouMean(word, known);
  return guess === undefined ? '' : `; did you mean "${guess}"?`;
}

/**
 * `parse config: [dstream.hcl:4,22-23: Invalid expression; Expected ...]` -> `dstream.hcl:4:22: Invalid expression; Expected ...`:
 * HCL's `line,column-range` becomes the `file:line:column` of every other message, for each diagnostic.
 */
function hclError(err: unknown, file: string): DstreamError {
  const text = err instanceof Error ? err.message : String(err);
  const diag = /[^\s[,]+:(\d+),(\d+)(?:-\d+(?:,\d+)?)?: (.+?)(?=, [^\s[,]+:\d+,\d+|\]?$)/g;
  const found = [...text.matchAll(diag)].map((m) => ({ line: Number(m[1]), column: Number(m[2]), message: m[3]!.trim() }));
  if (found.length === 0) return new DstreamError(ErrorCodes.CONFIG, `${file}: ${text}`, { cause: err });
  const first = found[0]!;
  const more = found.slice(1).map((d) => `\n${file}:${d.line}:${d.column}: ${d.message}`).join('');
  return configError(file, first, `${first.message}${more}`, err);
}

/** The task of that name, or an error listing the tasks there are (with a did-you-mean). */
export function taskNamed(tasks: TaskFile, name: string): TaskConfig {
  const task = tasks.tasks.find((t) => t.name === name);
  if (task !== undefined) return task;
  const names = tasks.declared ?? tasks.tasks.map((t) => t.name);
  throw new DstreamError(ErrorCodes.CONFIG, `no task "${name}" in ${tasks.file}${hint(name, names)} (tasks: ${names.join(', ')})`, { details: { task: name, tasks: names } });
}
