/**
 * A small schema for provider configuration: enough to validate config objects with messages
 * that name the field, what was expected and a did-you-mean for unknown keys; to map
 * standalone flags and environment variables onto config; and to print --help. Values of fields
 * marked `secret` never appear in messages.
 */
import { DstreamError, ErrorCodes } from '../errors.js';

export type FieldType = 'string' | 'integer' | 'number' | 'boolean' | 'string[]' | 'object';

export interface FieldSchema {
  type: FieldType;
  description?: string;
  required?: boolean;
  default?: unknown;
  enum?: readonly (string | number)[];
  minimum?: number;
  maximum?: number;
  /** Environment variable read when neither config nor flag gives a value. */
  env?: string;
  /** Never echoed in messages or logs. */
  secret?: boolean;
  /**
   * Keys of the original dstream's providers that mean this field (docs/protocol.md has the table):
   * `same` takes the value as it is; a function converts it, or says why it cannot stand for this field.
   */
  aliases?: Record<string, AliasRule>;
  /** A file or directory: relative values are resolved against the task file's directory. */
  path?: boolean;
}

export type AliasRule = 'same' | ((value: unknown) => { value: unknown } | { problem: string });

/** A Go duration ("5s", "1m30s", "500ms"), as the original ingester took, for a field in milliseconds. */
export const goDurationMs =
  (field: string): AliasRule =>
  (v) => {
    const units: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
    const parts = typeof v === 'string' && /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(v) ? [...v.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)] : [];
    if (parts.length === 0) return { problem: `expected a duration such as "5s" (or give ${field} in milliseconds), got ${shown(v)}` };
    return { value: Math.round(parts.reduce((ms, p) => ms + Number(p[1]) * units[p[2]!]!, 0)) };
  };

export type ConfigSchema = Record<string, FieldSchema>;

export interface ValidateOptions {
  /** Prefix of field paths in messages. Default `config`. */
  path?: string;
  /** Environment for `env` fallbacks. */
  env?: Record<string, string | undefined>;
}

/** Checks `value` against `schema`, fills defaults and env fallbacks; throws one error listing every problem. */
export function validateConfig(
  schema: ConfigSchema,
  value: Record<string, unknown>,
  options: ValidateOptions = {},
): Record<string, unknown> {
  const path = options.path ?? 'config';
  const problems: string[] = [];
  /** The same problems by config key, so a task file can point at the attribute. */
  const fields: Array<{ key: string; message: string }> = [];
  const problem = (key: string, message: string) => {
    problems.push(message);
    fields.push({ key, message });
  };
  const out: Record<string, unknown> = {};
  const known = Object.keys(schema);
  value = withAliases(schema, value, path, problems);
  for (const key of Object.keys(value)) {
    if (!(key in schema)) {
      const guess = didYouMean(key, known);
      problem(key, `${path}.${key}: unknown key${guess ? `; did you mean "${guess}"?` : `; known keys: ${known.join(', ') || 'none'}`}`);
    }
  }
  for (const [key, field] of Object.entries(schema)) {
    // null is "not set", as in HCL and Terraform (and what `validate --skip-env` puts for a missing variable).
    let v: unknown = value[key] === null ? undefined : value[key];
    let from = `${path}.${key}`;
    // An empty variable counts as unset, as shells and most tools treat it.
    const fromEnv = field.env === undefined ? undefined : options.env?.[field.env];
    if (v === undefined && fromEnv !== undefined && fromEnv !== '') {
      v = coerce(field, fromEnv);
      from = `environment variable ${field.env}`;
    }
    if (v === undefined) {
      if (field.default !== undefined) out[key] = structuredClone(field.default);
      else if (field.required) problem(key, `${path}.${key}: required${field.env ? ` (or set ${field.env})` : ''}${field.description ? ` - ${field.description}` : ''}`);
      continue;
    }
    const wrong = fieldProblem(field, v);
    if (wrong !== undefined) problem(key, `${from}: ${wrong}`);
    else out[key] = v;
  }
  if (problems.length > 0) {
    throw new DstreamError(ErrorCodes.CONFIG, problems.length === 1 ? problems[0]! : `invalid configuration:\n  ${problems.join('\n  ')}`, {
      details: { problems, fields },
    });
  }
  return out;
}

/** The original keys in `value` under dstream's names; what cannot be taken over becomes a problem. */
function withAliases(schema: ConfigSchema, value: Record<string, unknown>, path: string, problems: string[]): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const [key, field] of Object.entries(schema)) {
    for (const [alias, rule] of Object.entries(field.aliases ?? {})) {
      if (!(alias in value)) continue;
      out ??= { ...value };
      delete out[alias];
      if (key in value) {
        problems.push(`${path}.${alias}: the original provider's name for ${key}, which is given too; keep one`);
        continue;
      }
      const got = rule === 'same' ? { value: value[alias] } : rule(value[alias]);
      if ('problem' in got) problems.push(`${path}.${alias}: ${got.problem}`);
      else out[key] = got.value;
    }
  }
  return out ?? value;
}

function fieldProblem(field: FieldSchema, v: unknown): string | undefined {
  const got = field.secret ? withArticle(typeOf(v)) : shown(v);
  switch (field.type) {
    case 'string':
      if (typeof v !== 'string') return `expected a string, got ${got}`;
      break;
    case 'integer':
      if (typeof v !== 'number' || !Number.isInteger(v)) return `expected an integer, got ${got}`;
      break;
    case 'number':
      if (typeof v !== 'number' || !Number.isFinite(v)) return `expected a number, got ${got}`;
      break;
    case 'boolean':
      if (typeof v !== 'boolean') return `expected true or false, got ${got}`;
      break;
    case 'string[]':
      if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) return `expected a list of strings, got ${got}`;
      break;
    case 'object':
      if (typeof v !== 'object' || v === null || Array.isArray(v)) return `expected an object, got ${got}`;
      break;
  }
  if (field.enum !== undefined && !field.enum.includes(v as string | number)) {
    return `expected one of ${field.enum.map((e) => JSON.stringify(e)).join(', ')}, got ${got}`;
  }
  if (typeof v === 'number') {
    if (field.minimum !== undefined && v < field.minimum) return `must be at least ${field.minimum}, got ${v}`;
    if (field.maximum !== undefined && v > field.maximum) return `must be at most ${field.maximum}, got ${v}`;
  }
  return undefined;
}

/** Turns a string (flag or environment value) into the field's type where it reads as one. */
export function coerce(field: FieldSchema, raw: string): unknown {
  switch (field.type) {
    case 'integer':
    case 'number': {
      const n = Number(raw);
      return raw.trim() !== '' && Number.isFinite(n) ? n : raw;
    }
    case 'boolean':
      if (/^(true|1|yes)$/i.test(raw)) return true;
      if (/^(false|0|no)$/i.test(raw)) return false;
      return raw;
    case 'string[]':
      return raw
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s.length > 0);
    case 'object':
      try {
        return JSON.parse(raw) as unknown;
      } catch {
        return raw; // reported by validation as "expected an object, got string ..."
      }
    default:
      return raw;
  }
}

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'list';
  return typeof v;
}

function withArticle(word: string): string {
  return /^[aeiou]/.test(word) ? `an ${word}` : `a ${word}`;
}

function shown(v: unknown): string {
  const text = JSON.stringify(v) ?? String(v);
  return `${typeOf(v)} ${text.length > 60 ? `${text.slice(0, 60)}...` : text}`;
}

/** The closest candidate within a small edit distance, for "did you mean". */
export function didYouMean(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  const norm = (s: string) => s.toLowerCase().replaceAll('-', '_');
  const w = norm(word);
  for (const c of candidates) {
    const d = distance(w, norm(c));
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

type ValueOfField<F extends FieldSchema> = F extends { enum: readonly (infer E)[] }
  ? E
  : F['type'] extends 'string'
    ? string
    : F['type'] extends 'integer' | 'number'
      ? number
      : F['type'] extends 'boolean'
        ? boolean
        : F['type'] extends 'string[]'
          ? string[]
          : Record<string, unknown>;

type Present<F> = F extends { required: true } ? true : F extends { default: {} | null } ? true : false;

/**
 * The config object a schema validates to: `{ label: { type: 'string', default: 'rows' } }` ->
 * `{ label: string }`; fields without a default and not required are optional.
 */
export type ConfigOf<S extends ConfigSchema> = {
  -readonly [K in keyof S as Present<S[K]> extends true ? K : never]: ValueOfField<S[K]>;
} & {
  -readonly [K in keyof S as Present<S[K]> extends true ? never : K]?: ValueOfField<S[K]>;
};
