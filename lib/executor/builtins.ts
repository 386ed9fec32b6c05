/** The providers dstream ships, by the name a task uses in `provider = "..."`. */
import type { ProviderDefinition } from '../provider/run-provider.js';
import { asbSink } from '../sinks/service-bus/asb-sink.js';
import { filesProvider } from '../sinks/files/provider.js';
import { generatorProvider } from '../sources/generator/provider.js';
import { mssqlCdcSource } from '../sources/mssql/provider.js';

export const BUILTINS: Record<string, ProviderDefinition<never>> = {
  generator: generatorProvider as unknown as ProviderDefinition<never>,
  'mssql-cdc': mssqlCdcSource as unknown as ProviderDefinition<never>,
  files: filesProvider as unknown as ProviderDefinition<never>,
  'asb-sink': asbSink as unknown as ProviderDefinition<never>,
};
