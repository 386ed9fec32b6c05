/**
 * The lifecycle verbs of an infrastructure-owning provider, from two answers: what the task wants
 * to exist, and which engine to ask. A provider writes only `resolve`.
 */
import type { ProviderContext, ProviderDefinition } from '../provider/run-provider.js';
import type { DesiredQueue } from '../infra/desired.js';
import type { InfrastructureEngine } from '../infra/engine.js';

export type Resolve<C> = (ctx: ProviderContext<C>) => Promise<{ engine: InfrastructureEngine; desired: DesiredQueue[] }>;

export function infrastructureVerbs<C>(resolve: Resolve<C>): Pick<ProviderDefinition<C>, 'plan' | 'init' | 'status' | 'destroy'> {
  return {
    plan: async (ctx) => {
      const { engine, desired } = await resolve(ctx);
      return engine.plan(desired);
    },
    init: async (ctx) => {
      const { engine, desired } = await resolve(ctx);
      return engine.init(desired);
    },
    status: async (ctx) => {
      const { engine, desired } = await resolve(ctx);
      return engine.status(desired);
    },
    destroy: async (ctx) => {
      const { engine } = await resolve(ctx);
      return engine.destroy();
    },
  };
}
