/**
 * `dstream/infra`: what a task wants to exist (one queue per table) and the engines that make it
 * so (Service Bus administration client, embedded Pulumi), and the built-in provider definitions.
 */
export { desiredQueues, tableRefOf, type DesiredQueue } from './desired.js';
export type { InfrastructureEngine, InfraResult } from './engine.js';
export { infrastructureVerbs, type Resolve } from '../providers/infra-verbs.js';
export { AdminEngine, type EngineOptions } from './admin-engine.js';
export { PulumiEngine, type PulumiEngineOptions } from './pulumi-engine.js';
export { queueProgram } from './pulumi-program.js';
export type { AzureTarget } from './pulumi-plan.js';
export { adminClient, ensureQueue, DEFAULT_QUEUE_SETTINGS, type QueueSettings } from './service-bus-admin.js';
export { asbSink, type AsbSinkConfig } from '../providers/asb-sink.js';
export { generatorProvider, type GeneratorConfig } from '../providers/generator.js';
export { filesProvider, type FilesConfig } from '../providers/files.js';
