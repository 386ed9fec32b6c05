/**
 * generatorSource(): synthetic CDC, so that everything runs with nothing installed. Seeded and
 * deterministic: the same seed gives the same changes, so a restart from a checkpoint position
 * continues exactly where the stream left off. Inserts, updates and deletes (only of rows that
 * exist) over several tables, grouped in transactions of 1-3 rows, each followed by a checkpoint.
 * Unpaced, commit times are synthetic (a second per transaction from 2026-01-01); paced (a rate),
 * each change's commit time is when it is emitted.
 */
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { invalidOption } from '../../errors.js';
import { checkpoint, type Envelope } from '../../envelope/types.js';

export interface GeneratorOptions {
  /** Default Persons, Orders, Customers. */
  tables?: string[];
  /** Default 1. */
  seed?: number;
  /** Stop after this many rows (0: never). Default 0. */
  count?: number;
  /** Rows per second (0: as fast as the reader takes them). Default 0. */
  ratePerSecond?: number;
  /** Resume after this checkpoint position (from an earlier run with the same seed and tables). */
  after?: GeneratorPosition;
  signal?: AbortSignal;
}

export interface GeneratorPosition {
  lsn: string;
  /** Transactions and rows emitted up to and including this checkpoint. */
  tx: number;
  rows: number;
}

const SOURCE = 'generator';
const NAMES = ['Ada', 'Grace', 'Edsger', 'Barbara', 'Ken', 'Zoë', 'Jürgen', 'Tomás'];

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const hex = (n: number) => `0x${n.toString(16).padStart(20, '0')}`;

function rowFor(table: string, id: number, r: () => number): Record<string, unknown> {
  const name = NAMES[Math.floor(r() * NAMES.length)]!;
  if (table === 'Orders') return { OrderId: id, CustomerId: 1 + Math.floor(r() * 50), Total: (r() * 500).toFixed(2), Status: ['new', 'paid', 'shipped'][Math.floor(r() * 3)] };
  if (table === 'Customers') return { CustomerId: id, Company: `${name} & Co`, Country: ['NZ', 'DE', 'JP', 'BR'][Math.floor(r() * 4)] };
  return { Id: id, Name: name, Email: `${name.toLowerCase()}${id}@example.com` };
}

/** The changes, in commit order, as an iterator (for tests and benchmarks without streams). */
export function* generateChanges(options: GeneratorOptions = {}): Generator<Envelope> {
  const tables = options.tables ?? ['Persons', 'Orders', 'Customers'];
  if (tables.length === 0) throw invalidOption('generator needs at least one table');
  const r = rng(options.seed ?? 1);
  const count = options.count ?? 0;
  const live = new Map<string, Array<Record<string, unknown>>>(tables.map((t) => [t, []]));
  const nextId = new Map<string, number>(tables.map((t) => [t, 1]));
  let rows = 0;
  for (let tx = 1; count === 0 || rows < count; tx++) {
    const lsn = hex(0x27_0000_0000 + tx * 16);
    const size = 1 + Math.floor(r() * 3);
    const batch: Envelope[] = [];
    for (let seq = 1; seq <= size && (count === 0 || rows < count); seq++) {
      const table = tables[Math.floor(r() * tables.length)]!;
      const existing = live.get(table)!;
      const roll = r();
      const op: 'Insert' | 'Update' | 'Delete' = roll < 0.6 || existing.length === 0 ? 'Insert' : roll < 0.85 ? 'Update' : 'Delete';
      let data: Record<string, unknown>;
      if (op === 'Insert') {
        const id = nextId.get(table)!;
        nextId.set(table, id + 1);
        data = rowFor(table, id, r);
        existing.push(data);
      } else {
        const i = Math.floor(r() * existing.length);
        if (op === 'Update') {
          data = { ...rowFor(table, Object.values(existing[i]!)[0] as number, r) };
          existing[i] = data;
        } else {
          data = existing[i]!;
          existing.splice(i, 1);
        }
      }
      rows++;
      batch.push({
        source: SOURCE,
        type: 'cdc',
        data,
        metadata: {
          TableName: table,
          Schema: 'dbo',
          Database: 'demo',
          OperationType: op,
          OperationID: op === 'Insert' ? 2 : op === 'Update' ? 4 : 1,
          LSN: lsn,
          Seq: hex(seq),
          CommitTime: new Date(Date.UTC(2026, 0, 1) + tx * 1000).toISOString(),
        },
      });
      // A bounded working set: the oldest rows stop being candidates for updates and deletes.
      if (existing.length > 200) existing.shift();
    }
    yield* batch;
    const position: GeneratorPosition = { lsn, tx, rows };
    yield checkpoint(position, SOURCE);
  }
}

/** A Readable of generated changes and checkpoints; resumes after `after`, paces by `ratePerSecond`. */
export function generatorSource(options: GeneratorOptions = {}): Readable {
  const after = options.after;
  if (after !== undefined && (typeof after.tx !== 'number' || typeof after.rows !== 'number')) {
    throw invalidOption('generator: the position to resume after must come from a generator checkpoint ({lsn, tx, rows})');
  }
  const rate = options.ratePerSecond ?? 0;
  let skipping = after !== undefined;
  /** Same seed, same sequence: everything up to and including the stored checkpoint was delivered. */
  const delivered = (e: Envelope): boolean => {
    if (!skipping) return false;
    if (e.type === 'checkpoint' && (e.data as { position: GeneratorPosition }).position.tx === after!.tx) skipping = false;
    return true;
  };
  // Unpaced, a synchronous iterator: Readable.from() then fills its buffer without a promise per row.
  function* unpaced(): Generator<Envelope> {
    for (const e of generateChanges(options)) {
      if (options.signal?.aborted) return;
      if (!delivered(e)) yield e;
    }
  }
  async function* paced(): AsyncGenerator<Envelope> {
    const started = Date.now();
    let emitted = 0;
    for (const e of generateChanges(options)) {
      if (options.signal?.aborted) return;
      if (delivered(e)) continue;
      if (e.type !== 'checkpoint') {
        const due = started + (emitted / rate) * 1000;
        // An abort ends the wait early; the check at the top of the loop then ends the stream.
        if (due > Date.now()) await sleep(due - Date.now(), undefined, { signal: options.signal }).catch((err: Error) => {
          if (err.name !== 'AbortError') throw err;
        });
        emitted++;
        // Paced, it stands for a live source: a change is committed when it is emitted (seconds
        // behind the source are then real); only the time differs from the unpaced changes.
        e.metadata!.CommitTime = new Date().toISOString();
      }
      yield e;
    }
  }
  return Readable.from(rate > 0 ? paced() : unpaced(), { objectMode: true });
}
