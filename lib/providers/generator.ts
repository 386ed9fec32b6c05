/** The built-in `generator` input provider: synthetic CDC for demos and tests, resumable. */
import { pipeline } from 'node:stream/promises';
import type { ProviderDefinition } from '../provider/run-provider.js';
import { countRows } from '../metrics/rows.js';
import { generatorSource, type GeneratorPosition } from '../sources/generator/generator.js';

export interface GeneratorConfig {
  tables: string[];
  seed: number;
  /** Unset: runs until stopped, with a warning (count = 0 says so on purpose, quietly). */
  count?: number;
  rate: number;
}

const KEYS: Record<string, string> = { Orders: 'OrderId', Customers: 'CustomerId' };

export const generatorProvider: ProviderDefinition<GeneratorConfig> = {
  name: 'generator',
  description: 'Synthetic CDC changes (inserts, updates, deletes) over several tables, seeded and resumable.',
  config: {
    tables: { type: 'string[]', default: ['Persons', 'Orders', 'Customers'], description: 'tables to generate changes for' },
    seed: { type: 'integer', default: 1, description: 'same seed, same changes' },
    count: { type: 'integer', minimum: 0, description: 'stop after this many rows (0: run until stopped, on purpose; unset: the same, with a warning)' },
    rate: { type: 'number', minimum: 0, default: 0, description: 'rows per second (0: as fast as the reader takes them)' },
  },
  discover: (ctx) => ({
    streams: ctx.config.tables.map((name) => ({ name, schema: 'dbo', database: 'demo', keys: [KEYS[name] ?? 'Id'] })),
  }),
  async run(ctx) {
    if (ctx.config.count === undefined) {
      ctx.log('no count: generating until stopped (it fills a disk in minutes); set count = N to stop after N rows, or count = 0 to run unbounded on purpose');
    }
    const source = generatorSource({
      tables: ctx.config.tables,
      seed: ctx.config.seed,
      count: ctx.config.count ?? 0,
      ratePerSecond: ctx.config.rate,
      after: ctx.header.state as GeneratorPosition | undefined,
      signal: ctx.signal,
    });
    // The host ends the output, after whatever it writes last.
    await (ctx.metrics ? pipeline(source, countRows(ctx.metrics), ctx.output, { end: false }) : pipeline(source, ctx.output, { end: false }));
  },
};
