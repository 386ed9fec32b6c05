/**
 * `dstream/provider`: writing a provider. runProvider() hosts one on stdio; the rest is the
 * protocol it speaks (command header, handshake, result lines, exit codes) and config schemas.
 */
export { runProvider, type ProviderContext, type ProviderDefinition, type ProviderIO } from './run-provider.js';
export {
  PROTOCOL_VERSION,
  VERBS,
  header,
  parseHeader,
  readHandshake,
  type CommandHeader,
  type LifecycleVerb,
  type ReadyLine,
  type ResourceReport,
  type ResultLine,
  type StreamDescriptor,
  type Verb,
} from '../protocol/messages.js';
export { routeCommands, type CommandHandlers, type CommandRouter, type CommandRouterEvents, type LifecycleHandler } from '../protocol/command-router.js';
export { ExitCodes, exitCodeFor } from '../protocol/exit-codes.js';
export { validateConfig, type ConfigSchema, type FieldSchema } from '../config/schema.js';
