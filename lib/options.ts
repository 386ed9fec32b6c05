/**
 * Options of the public factories, checked once at construction: plain JavaScript callers get
 * DSTREAM_ERR_INVALID_OPTION naming the factory and the option (with a did-you-mean for a
 * misspelt one) instead of a silently ignored key or a TypeError deep inside a stream.
 */
import { didYouMean } from './config/schema.js';
import { invalidOption } from './errors.js';

type Kind = 'string' | 'number' | 'boolean' | 'function' | 'object' | 'string[]' | 'stream';

interface OptionRule {
  type: Kind;
  required?: boolean;
  enum?: readonly string[];
  /** Said when it is missing. */
  about?: string;
}

export type OptionRules = Record<string, OptionRule>;

const INVALID_RECORD: OptionRules = {
  onInvalid: { type: 'string', enum: ['fail', 'skip', 'dead-letter'] },
  deadLetter: { type: 'stream' },
};

const CONNECTION: OptionRules = {
  connectionString: { type: 'string' },
  namespace: { type: 'string' },
  credential: { type: 'object' },
};

const PARTITIONED: OptionRules = {
  template: { type: 'string' },
  maxPartitions: { type: 'number' },
  onCheckpoint: { type: 'function' },
  onSink: { type: 'function' },
};

export const FACTORY_OPTIONS = {
  route: { ...INVALID_RECORD, template: { type: 'string' }, include: { type: 'string[]' }, exclude: { type: 'string[]' }, highWaterMark: { type: 'number' } },
  decodeEnvelopes: { ...INVALID_RECORD, maxLineBytes: { type: 'number' }, header: { type: 'boolean' }, highWaterMark: { type: 'number' }, raw: { type: 'boolean' } },
  encodeEnvelopes: { chunkBytes: { type: 'number' }, highWaterMark: { type: 'number' } },
  partitionByTable: {
    sinkFor: { type: 'function', required: true, about: '(destination) => Writable' },
    maxPartitions: { type: 'number' },
    keyOf: { type: 'function' },
    onCheckpoint: { type: 'function' },
    highWaterMark: { type: 'number' },
  },
  toFiles: { ...PARTITIONED, dir: { type: 'string', required: true, about: 'the directory of the files' }, noSync: { type: 'boolean' }, highWaterMark: { type: 'number' } },
  toServiceBus: {
    ...PARTITIONED,
    ...CONNECTION,
    body: { type: 'string', enum: ['envelope', 'data'] },
    sessionKey: { type: 'string' },
    lingerMs: { type: 'number' },
    maxBatchMessages: { type: 'number' },
    retry: { type: 'object' },
    onOversize: { type: 'string', enum: ['fail', 'dead-letter'] },
    deadLetter: { type: 'stream' },
    highWaterMark: { type: 'number' },
    sendTimeoutMs: { type: 'number' },
    firstSendTimeoutMs: { type: 'number' },
    onWarning: { type: 'function' },
    onMissingQueue: { type: 'function' },
    onRetry: { type: 'function' },
    observer: { type: 'object' },
  },
} satisfies Record<string, OptionRules>;

function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)?.slice(0, 40) ?? ''}`.trim();
}

function fits(type: Kind, v: unknown): boolean {
  switch (type) {
    case 'string[]':
      return Array.isArray(v) && v.every((x) => typeof x === 'string');
    case 'object':
      return typeof v === 'object' && v !== null && !Array.isArray(v);
    case 'stream':
      return typeof v === 'object' && v !== null && typeof (v as { write?: unknown }).write === 'function';
    case 'number':
      return typeof v === 'number' && !Number.isNaN(v);
    default:
      return typeof v === type;
  }
}

const WHAT: Record<Kind, string> = { string: 'a string', number: 'a number', boolean: 'true or false', function: 'a function', object: 'an object', 'string[]': 'an array of strings', stream: 'a writable stream' };

/** Throws DSTREAM_ERR_INVALID_OPTION for an unknown option, a value of the wrong type, or a missing required one. */
export function checkOptions(factory: keyof typeof FACTORY_OPTIONS, options: unknown): void {
  const rules: OptionRules = FACTORY_OPTIONS[factory];
  const required = Object.entries(rules).filter(([, r]) => r.required);
  if (options === undefined && required.length === 0) return;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw invalidOption(`${factory}() takes an options object${required.length ? ` with ${required.map(([k]) => k).join(', ')}` : ''}; got ${options === undefined ? 'nothing' : kindOf(options)}`, { factory });
  }
  const given = options as Record<string, unknown>;
  const known = Object.keys(rules);
  for (const key of Object.keys(given)) {
    if (key in rules) continue;
    const guess = didYouMean(key, known);
    throw invalidOption(`${factory}(): unknown option "${key}"${guess ? `; did you mean "${guess}"?` : `; it takes ${known.join(', ')}`}`, { factory, option: key });
  }
  for (const [key, rule] of Object.entries(rules)) {
    const v = given[key];
    if (v === undefined) {
      if (rule.required) throw invalidOption(`${factory}(): option "${key}" is required${rule.about ? ` (${rule.about})` : ''}`, { factory, option: key });
      continue;
    }
    if (!fits(rule.type, v)) throw invalidOption(`${factory}(): option "${key}" must be ${WHAT[rule.type]}, got ${kindOf(v)}`, { factory, option: key });
    if (rule.enum !== undefined && !rule.enum.includes(v as string)) {
      throw invalidOption(`${factory}(): option "${key}" must be one of ${rule.enum.map((e) => JSON.stringify(e)).join(', ')}, got ${JSON.stringify(v)}`, { factory, option: key });
    }
  }
}
