import { CHECKPOINT_TYPE, type Envelope } from './types.js';

/**
 * Why `value` is not an envelope, or undefined when it is one.
 *
 * Deliberately lenient so that envelopes from existing providers pass: an envelope is a JSON
 * object with a `data` key; `source` and `type` are strings when present; `metadata` is an object
 * when present. A checkpoint must carry `data.position`. The JSON Schemas in
 * lib/protocol/schemas/ say the same thing and the tests keep the two in step.
 */
export function envelopeProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return `expected a JSON object, got ${describe(value)}`;
  }
  const v = value as Record<string, unknown>;
  if (!('data' in v)) return 'missing "data"';
  if (v.type !== undefined && typeof v.type !== 'string') return `"type" must be a string, got ${describe(v.type)}`;
  if (v.source !== undefined && typeof v.source !== 'string') {
    return `"source" must be a string, got ${describe(v.source)}`;
  }
  const m = v.metadata;
  if (m !== undefined && (typeof m !== 'object' || m === null || Array.isArray(m))) {
    return `"metadata" must be an object, got ${describe(m)}`;
  }
  if (v.type === CHECKPOINT_TYPE) {
    const d = v.data;
    if (typeof d !== 'object' || d === null || !('position' in d)) return 'checkpoint without "data.position"';
  }
  return undefined;
}

export function isEnvelope(value: unknown): value is Envelope {
  return envelopeProblem(value) === undefined;
}

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `${typeof value} ${JSON.stringify(value)}`;
}
