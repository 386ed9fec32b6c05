/**
 * dstream: the public API. Factories return streams that work inside `stream.pipeline()`:
 *
 *   await pipeline(process.stdin, decodeEnvelopes(), route(), encodeEnvelopes(), process.stdout);
 *   await pipeline(mssqlCdc(opts), toServiceBus(opts));
 *
 * This entry is the data path: envelopes, stages, sinks, sources, error codes, and what an operator
 * watches it with (metrics, readiness, the /metrics /healthz /readyz endpoints). The rest has its
 * own entry: `dstream/provider` (writing a provider: the protocol host and its messages),
 * `dstream/mssql` (the SQL Server CDC source's parts: positions, checkpoint store, connector),
 * `dstream/infra` (queues, provisioning engines, the built-in provider definitions). Anything not
 * exported from one of the four is internal and may change.
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
export { decodeEnvelopes, lineOf, DEFAULT_MAX_LINE_BYTES, type DecodeOptions, type DecodeStats, type EnvelopeDecoder, type EnvelopeDecoderEvents } from './envelope/decode.js';
export { encodeEnvelopes, type EncodeOptions, type EnvelopeEncoder } from './envelope/encode.js';
export { INVALID_POLICIES, type InvalidPolicy, type InvalidRecord, type InvalidRecordOptions } from './envelope/invalid.js';
export { parseTable, tableKey, displayTable, type TableRef } from './envelope/table.js';

export { route, type RouteOptions, type RouteStats, type Router, type RouterEvents } from './streams/route.js';
export { DEFAULT_TEMPLATE, destinationKey, entityNameProblem, planDestinations, type Assignment } from './streams/destination.js';
export { DURABLE_ACKS, partitionByTable, type PartitionOptions, type PartitionStats, type Partitioner, type PartitionerEvents } from './streams/partition.js';

export { toFiles, toServiceBus, type ToFilesOptions, type ToServiceBusOptions } from './sinks/deliver.js';
export { serviceBusSink, type OversizePolicy, type ServiceBusSinkOptions, type ServiceBusSinkStats, type ServiceBusSink, type ServiceBusSinkEvents } from './sinks/service-bus/sink.js';
export { messageIdOf, type BodyMode } from './sinks/service-bus/message.js';
export type { RetryOptions } from './sinks/service-bus/errors.js';
export type { ConnectionOptions } from './sinks/service-bus/client.js';
export { fileSink, type FileSinkOptions, type FileSinkStats, type FileSink, type FileSinkEvents } from './sinks/files/file-sink.js';

export { generatorSource, generateChanges, type GeneratorOptions, type GeneratorPosition } from './sources/generator/generator.js';
export { mssqlCdc, type GapPolicy, type LeaseOptions, type MssqlCdcOptions, type MssqlCdcStream, type SourceBacklog } from './sources/mssql/reader.js';

// Operations: Prometheus metrics on a registry of their own (prom-client loads on first use),
// readiness by part, and the endpoints (docs/operations.md).
export { createMetrics, type CreateMetricsOptions, type DstreamMetrics } from './metrics/registry.js';
export { serveOps, type OpsServer, type OpsServerOptions } from './metrics/server.js';
export { Readiness, type ReadinessReport } from './metrics/readiness.js';
export { deliveryObserver, type DeliveryObserverOptions } from './metrics/delivery.js';
export { sourceObserver, type SourceObserverOptions } from './metrics/source.js';
export { countRows } from './metrics/rows.js';
export type { RetryKind, SinkObserver } from './sinks/service-bus/sink.js';
export type { ReaderState } from './sources/mssql/reader.js';

// A provider is one call; the protocol's parts are in `dstream/provider`.
export { runProvider, type ProviderContext, type ProviderDefinition } from './provider/run-provider.js';
export { ExitCodes } from './protocol/exit-codes.js';
