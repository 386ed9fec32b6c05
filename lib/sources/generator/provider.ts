/** The built-in `generator` input provider: synthetic CDC for demos and tests, resumable. */
import { pipeline } from 'node:stream/promises';
import type { ProviderDefinition } from '../../provider/run-provider.js';
import { generatorSource, type GeneratorPosition } from './generator.js';

export interface GeneratorConfig {
  tables: string[];
  seed: number;
  count: number;
  rate: number;
}

const KEYS: Record<string, string> = { Orders: 'OrderId', Customers: 'CustomerId' };

export const generatorProvider: ProviderDefinition<GeneratorConfig> = {
  name: 'generator',
  description: 'Synthetic CDC changes (inserts, updates, deletes) over several tables, seeded and resumable.',
  config: {
    tables: { type: 'string[]', default: ['Persons', 'Orders', 'Customers'], description: 'tables to generate changes for' },
    seed: { type: 'integer', default: 1, description: 'same seed, same changes' },
    count: { type: 'integer', minimum: 0, default: 0, description: 'stop after this many rows (0: run until stopped)' },
    rate: { type: 'number', minimum: 0, default: 0, description: 'rows per second (0: as fast as the reader takes them)' },
  },
  discover: (ctx) => ({
    streams: ctx.config.tables.map((name) => ({ name, schema: 'dbo', database: 'demo', keys: [KEYS[name] ?? 'Id'] })),
  }),
  async run(ctx) {
    const source = generatorSource({
      tables: ctx.config.tables,
      seed: ctx.config.seed,
      count: ctx.config.count,
      ratePerSecond: ctx.config.rate,
      after: ctx.header.state as GeneratorPosition | undefined,
      signal: ctx.signal,
    });
    // The host ends the output, after whatever it writes last.
    await pipeline(source, ctx.output, { end: false });
  },
};
