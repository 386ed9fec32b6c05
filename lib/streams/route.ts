/**
 * route(): stamps `metadata.Destination` on each data envelope from a template and filters tables.
 * Checkpoint markers pass unchanged. Envelopes are stamped in place (the stream owns them once
 * written), which keeps the stage allocation-free on the hot path.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { lineOf } from '../envelope/decode.js';
import { InvalidRecords, type InvalidRecord, type InvalidRecordOptions, type InvalidStats } from '../envelope/invalid.js';
import { isCheckpoint, type Envelope } from '../envelope/types.js';
import { DestinationRegistry, DEFAULT_TEMPLATE, type Assignment } from './destination.js';
import { tableFilter, type TableFilterOptions } from './table-filter.js';
import { checkOptions } from '../options.js';
import type { DuplexEvents, Listen } from '../events.js';

export interface RouteOptions extends TableFilterOptions, InvalidRecordOptions {
  /** Default `{table}_cdc_events`; placeholders `{table}`, `{schema}`, `{database}`. */
  template?: string;
  highWaterMark?: number;
}

export interface RouteStats extends InvalidStats {
  routed: number;
  /** Envelopes of tables left out by include/exclude. */
  filtered: number;
  checkpoints: number;
}

/** `route()`'s events besides a Transform's: `'destination'` the first time a table is given a destination; `'invalid'` with each record refused. */
export interface RouterEvents {
  destination: [assignment: Assignment];
  invalid: [record: InvalidRecord];
}

export interface Router {
  on: Listen<RouterEvents, this, DuplexEvents>;
  once: Listen<RouterEvents, this, DuplexEvents>;
  off: Listen<RouterEvents, this, DuplexEvents>;
}

export class Router extends Transform {
  private readonly registry: DestinationRegistry;
  private readonly keep: ReturnType<typeof tableFilter>;
  private readonly invalid: InvalidRecords;
  private readonly counts = { routed: 0, filtered: 0, checkpoints: 0 };
  private readonly decisions = new Map<string, string | null>();

  constructor(options: RouteOptions = {}) {
    super({ objectMode: true, highWaterMark: options.highWaterMark ?? 16 });
    this.registry = new DestinationRegistry(options.template ?? DEFAULT_TEMPLATE);
    this.keep = tableFilter(options);
    this.invalid = new InvalidRecords(options);
  }

  get stats(): RouteStats {
    return { ...this.invalid.stats, ...this.counts };
  }

  summary(): string | undefined {
    return this.invalid.summary();
  }

  override _transform(env: Envelope, _enc: BufferEncoding, callback: TransformCallback): void {
    if (isCheckpoint(env)) {
      this.counts.checkpoints++;
      callback(null, env);
      return;
    }
    const meta = env.metadata;
    const table = meta?.TableName;
    if (typeof table !== 'string' || table.length === 0) {
      this.refuse(env, 'envelope has no metadata.TableName, so it cannot be routed', callback);
      return;
    }
    const schema = typeof meta!.Schema === 'string' ? meta!.Schema : undefined;
    const database = typeof meta!.Database === 'string' ? meta!.Database : undefined;
    // One lookup per envelope on the raw names; filter and naming run once per table.
    const key = `${database ?? ''}\u0000${schema ?? ''}\u0000${table}`;
    let decision = this.decisions.get(key);
    if (decision === undefined) {
      try {
        decision = this.decide(table, schema, database);
      } catch (err) {
        callback(err as Error);
        return;
      }
      this.decisions.set(key, decision);
    }
    if (decision === null) {
      this.counts.filtered++;
      callback();
      return;
    }
    meta!.Destination = decision;
    this.counts.routed++;
    callback(null, env);
  }

  /** The destination of a table, or null when include/exclude leave it out. */
  private decide(table: string, schema: string | undefined, database: string | undefined): string | null {
    if (!this.keep(table, schema)) return null;
    const { assignment, isNew } = this.registry.assign({ table, schema, database });
    if (isNew) this.emit('destination', assignment);
    return assignment.destination;
  }

  private refuse(env: Envelope, reason: string, callback: TransformCallback): void {
    const rec = { stage: 'route', line: lineOf(env), reason, raw: JSON.stringify(env) };
    const outcome = this.invalid.handle(rec);
    if (outcome instanceof Error) {
      callback(outcome);
      return;
    }
    this.emit('invalid', rec);
    if (outcome === undefined) callback();
    else outcome.then(() => callback(), callback);
  }
}

/** Envelopes -> envelopes with `metadata.Destination`, filtered by table. */
export function route(options?: RouteOptions): Router {
  checkOptions('route', options);
  return new Router(options);
}
