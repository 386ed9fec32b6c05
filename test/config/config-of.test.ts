/** runProvider() types ctx.config from the schema written in place (issue 13, point 9). */
import { describe, expectTypeOf, it } from 'vitest';
import { runProvider } from '../../lib/index.js';
import type { ConfigOf } from '../../lib/config/schema.js';

describe('ConfigOf', () => {
  it('maps a schema to the config it validates to', () => {
    type C = ConfigOf<{
      label: { type: 'string'; default: 'rows' };
      count: { type: 'integer'; required: true };
      mode: { type: 'string'; enum: readonly ['a', 'b'] };
      tables: { type: 'string[]' };
    }>;
    expectTypeOf<C>().toEqualTypeOf<{ label: string; count: number } & { mode?: 'a' | 'b'; tables?: string[] }>();
  });

  it('types ctx.config of a provider written in place', () => {
    // Typed only: never started (runProvider would read this process's stdin).
    const start = () =>
      runProvider({
        name: 'count-provider',
        config: { label: { type: 'string', default: 'rows' }, every: { type: 'integer' } },
        async run({ config }) {
          expectTypeOf(config.label).toEqualTypeOf<string>();
          expectTypeOf(config.every).toEqualTypeOf<number | undefined>();
        },
      });
    expectTypeOf(start).returns.resolves.toEqualTypeOf<number>();
  });
});
