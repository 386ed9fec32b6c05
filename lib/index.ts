/**
 * dstream: the public API. Factories return streams that work inside `stream.pipeline()`.
 *
 *   await pipeline(process.stdin, decodeEnvelopes(), route(), encodeEnvelopes(), process.stdout);
 */
export { DstreamError, ErrorCodes, isDstreamError, type ErrorCode } from './errors.js';

export {
  CHECKPOINT_TYPE,
  checkpoint,
  isCheckpoint,
  tableOf,
  type CheckpointData,
  type CheckpointEnvelope,
  type Envelope,
  type EnvelopeMetadata,
  type OperationType,
} from './envelope/types.js';
export { envelopeProblem, isEnvelope } from './envelope/validate.js';
export { decodeEnvelopes, lineOf, DEFAULT_MAX_LINE_BYTES, type DecodeOptions, type DecodeStats, type EnvelopeDecoder } from './envelope/decode.js';
export { encodeEnvelopes, type EncodeOptions, type EnvelopeEncoder } from './envelope/encode.js';
export { INVALID_POLICIES, type InvalidPolicy, type InvalidRecord, type InvalidRecordOptions } from './envelope/invalid.js';

export { route, type RouteOptions, type RouteStats, type Router } from './streams/route.js';
export {
  DEFAULT_TEMPLATE,
  entityNameProblem,
  planDestinations,
  type Assignment,
  type TableRef,
} from './streams/destination.js';
export { DURABLE_ACKS, partitionByTable, type PartitionOptions, type PartitionStats, type Partitioner } from './streams/partition.js';
export { destinationKey } from './streams/destination.js';

export { toFiles, toServiceBus, type ToFilesOptions, type ToServiceBusOptions } from './sinks/deliver.js';
export { serviceBusSink, type OversizePolicy, type ServiceBusSinkOptions, type ServiceBusSinkStats, type ServiceBusSink } from './sinks/service-bus/sink.js';
export { toServiceBusMessage, messageIdOf, type BodyMode, type MessageOptions } from './sinks/service-bus/message.js';
export type { RetryOptions } from './sinks/service-bus/errors.js';
export type { ConnectionOptions } from './sinks/service-bus/client.js';
export { fileSink, type FileSinkOptions, type FileSinkStats, type FileSink } from './sinks/files/file-sink.js';

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
} from './protocol/messages.js';
export { routeCommands, type CommandHandlers, type CommandRouter, type LifecycleHandler } from './protocol/command-router.js';
export { ExitCodes, exitCodeFor } from './protocol/exit-codes.js';

export { validateConfig, type ConfigOf, type ConfigSchema, type FieldSchema } from './config/schema.js';
export { runProvider, type ProviderContext, type ProviderDefinition, type ProviderIO } from './provider/run-provider.js';

export { desiredQueues, tableRefOf, type DesiredQueue } from './infra/desired.js';
export type { InfrastructureEngine, InfraResult } from './infra/engine.js';
export { infrastructureVerbs, type Resolve } from './infra/provider.js';
export { AdminEngine, type EngineOptions } from './infra/admin-engine.js';
export { PulumiEngine, type PulumiEngineOptions } from './infra/pulumi-engine.js';
export { queueProgram, type AzureTarget } from './infra/pulumi-program.js';
export { adminClient, ensureQueue, DEFAULT_QUEUE_SETTINGS, type QueueSettings } from './infra/service-bus-admin.js';
export { asbSink, type AsbSinkConfig } from './sinks/service-bus/asb-sink.js';

export { generatorSource, generateChanges, type GeneratorOptions, type GeneratorPosition } from './sources/generator/generator.js';
export { generatorProvider, type GeneratorConfig } from './sources/generator/provider.js';
export { FileStateStore, defaultStateDir, type StateStore, type StoredState } from './executor/state-store.js';
export { loadTaskFile, parseTaskFile, taskNamed, type ProviderRef, type TaskConfig, type TaskFile } from './config/tasks.js';
export { renderTemplate } from './config/template.js';

export { mssqlCdc, MSSQL_SOURCE, type GapPolicy, type LeaseOptions, type MssqlCdcOptions } from './sources/mssql/reader.js';
export { parsePosition, positionOf, type MssqlCdcPosition } from './sources/mssql/position.js';
export { mssqlCdcProvider, mssqlCdcSource, type MssqlCdcConfig, type MssqlCdcProviderOptions } from './sources/mssql/provider.js';
export { sqlServerConnector, describeConnection } from './sources/mssql/sqlserver.js';
export { SqlCheckpointStore, DEFAULT_CHECKPOINT_TABLE } from './sources/mssql/checkpoint-store.js';
export type { CdcConnector, CdcQueries, CaptureInstance, ConnectOptions, DriverChangeRow } from './sources/mssql/queries.js';
export { SQL, selectExpression } from './sources/mssql/sql.js';
export { typeClassOf, jsonValue, rowMapper, type TypeClass, type ColumnInfo } from './sources/mssql/types.js';
export { lsnToHex, lsnFromHex, compareLsn, incrementLsn } from './sources/mssql/lsn.js';
export { parseTableRef, tableKey } from './sources/mssql/tables.js';
