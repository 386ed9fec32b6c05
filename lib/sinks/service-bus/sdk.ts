/**
 * The Service Bus SDK, loaded on first use. It costs start-up time and tens of MB; a pipeline
 * that never talks to Service Bus (files, `dstream route`, `import('dstream')`) should not pay it.
 * The package is CommonJS, so a synchronous require gives the same module an import would.
 */
import { createRequire } from 'node:module';
import type * as Sdk from '@azure/service-bus';

let sdk: typeof Sdk | undefined;

export function serviceBusSdk(): typeof Sdk {
  return (sdk ??= createRequire(import.meta.url)('@azure/service-bus') as typeof Sdk);
}
