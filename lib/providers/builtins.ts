/**
 * The providers dstream ships, by the name a task uses in `provider = "..."`. Each is loaded on
 * first use, so a task pays at start-up only for its own providers (the generator and files do
 * not load the Service Bus SDK or the SQL Server driver).
 */
import type { ProviderDefinition } from '../provider/run-provider.js';

/** A provider definition, or a loader of one. */
export type BuiltinProvider = ProviderDefinition<never> | (() => Promise<ProviderDefinition<never>>);

const def = (d: unknown) => d as ProviderDefinition<never>;

export const BUILTINS: Record<string, BuiltinProvider> = {
  generator: () => import('./generator.js').then((m) => def(m.generatorProvider)),
  'mssql-cdc': () => import('./mssql-cdc.js').then((m) => def(m.mssqlCdcSource)),
  files: () => import('./files.js').then((m) => def(m.filesProvider)),
  'asb-sink': () => import('./asb-sink.js').then((m) => def(m.asbSink)),
};

/** The definition of a built-in provider, loading it if needed; undefined when `name` is not built in. */
export async function builtinNamed(builtins: Record<string, BuiltinProvider>, name: string): Promise<ProviderDefinition<never> | undefined> {
  const b = Object.hasOwn(builtins, name) ? builtins[name] : undefined;
  return typeof b === 'function' ? b() : b;
}
