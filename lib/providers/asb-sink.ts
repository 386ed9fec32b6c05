/**
 * The `asb-sink` output provider: envelopes from stdin to one Service Bus queue per destination.
 * Started by `dstream run` (command header) or in a pipe with options:
 *   mssql-cdc ... | dstream route | asb-sink --connection-string "$ASB" --state-file state.json
 */
import type { WriteStream } from 'node:fs';
import { openDeadLetterFile } from '../envelope/invalid.js';
import { pipeline } from 'node:stream/promises';
import type { TokenCredential } from '@azure/core-auth';
import { parseServiceBusConnectionString } from '@azure/service-bus';
import type { ConfigSchema } from '../config/schema.js';
import { invalidOption } from '../errors.js';
import { checkpoint, type CheckpointEnvelope } from '../envelope/types.js';
import { readStateFile, storedState, writeStateFile } from '../state/state-file.js';
import { latestSaver } from '../state/latest-saver.js';
import { skipAcknowledged } from '../streams/skip-acknowledged.js';
import type { ProviderContext, ProviderDefinition } from '../provider/run-provider.js';
import { DEFAULT_TEMPLATE } from '../streams/destination.js';
import { AdminEngine } from '../infra/admin-engine.js';
import type { InfrastructureEngine } from '../infra/engine.js';
import { infrastructureVerbs } from './infra-verbs.js';
import { PulumiEngine } from '../infra/pulumi-engine.js';
import { namespaceNameOf } from '../infra/pulumi-program.js';
import { desiredQueues, type DesiredQueue } from '../infra/desired.js';
import { queueWarnings, durationMs } from '../infra/queue-checks.js';
import { adminClient, endpointOf, ensureQueue, managed, type QueueSettings } from '../infra/service-bus-admin.js';
import { toServiceBus } from '../sinks/deliver.js';
import { deliveryObserver } from '../metrics/delivery.js';
import type { ConnectionOptions } from '../sinks/service-bus/client.js';
import type { ServiceBusSink } from '../sinks/service-bus/sink.js';
import { progressLine, summaryLine } from '../sinks/service-bus/progress.js';

export const asbSinkConfig = {
  connection_string: { type: 'string', secret: true, env: 'ASB_CONNECTION_STRING', aliases: { connectionString: 'same' }, description: 'Service Bus connection string (Send rights)' },
  namespace: { type: 'string', env: 'ASB_NAMESPACE', description: 'namespace host for Azure AD sign-in, instead of a connection string' },
  template: { type: 'string', default: DEFAULT_TEMPLATE, description: 'queue of envelopes without metadata.Destination' },
  body: { type: 'string', enum: ['envelope', 'data'], default: 'envelope', description: 'message body: the whole envelope or only its data' },
  session_key: { type: 'string', description: 'column whose value becomes the sessionId (session-enabled queues)' },
  linger_ms: { type: 'integer', minimum: 0, maximum: 10_000, default: 20, description: 'send a batch this long after its first message' },
  max_batch_messages: { type: 'integer', minimum: 1, maximum: 4500, default: 4500 },
  max_retries: { type: 'integer', minimum: 0, maximum: 100, default: 8, description: 'retries of a failed send (transient errors)' },
  retry_base_ms: { type: 'integer', minimum: 1, default: 200, description: 'first retry delay (exponential, jittered)' },
  retry_max_ms: { type: 'integer', minimum: 1, default: 30_000 },
  send_timeout_ms: { type: 'integer', minimum: 100, default: 30_000, description: 'give up on one send and retry after this long' },
  on_oversize: { type: 'string', enum: ['fail', 'dead-letter'], default: 'fail', description: 'a record larger than the queue accepts' },
  dead_letter: { type: 'string', path: true, description: 'file for dead-lettered records (with on_oversize = dead-letter)' },
  state_file: {
    type: 'string',
    path: true,
    description:
      'write the last acknowledged checkpoint here, atomically (the latest when acks come faster than saves). mssql-cdc --state-file reads it and resumes after it; asb-sink itself resumes only with skip_acknowledged',
  },
  skip_acknowledged: {
    type: 'boolean',
    default: false,
    description: 'with state_file, when the input replays the same stream from its start (a file): skip what the stored checkpoint covers instead of sending it again',
  },
  on_missing_queue: { type: 'string', enum: ['fail', 'create'], default: 'fail', description: 'a queue that does not exist: stop, or create it (needs Manage rights)' },
  task: { type: 'string', description: 'task name, recorded on the queues dstream creates (plan/init/status/destroy need it)' },
  tables: { type: 'string[]', description: 'tables whose queues plan/init/status manage, when the executor sends no streams' },
  provisioner: { type: 'string', enum: ['auto', 'sdk', 'pulumi'], default: 'auto', description: 'queue management: pulumi (embedded, needs resource_group) or sdk (administration client); auto picks pulumi when resource_group is set' },
  resource_group: { type: 'string', aliases: { resourceGroup: 'same' }, description: 'pulumi: the namespace\'s resource group' },
  namespace_name: { type: 'string', description: 'pulumi: the namespace name (default: from the connection string or namespace)' },
  pulumi_backend_url: { type: 'string', env: 'PULUMI_BACKEND_URL', description: 'pulumi: state backend (default: a file backend in the dstream state directory)' },
  state_dir: { type: 'string', path: true, env: 'DSTREAM_STATE_DIR', description: 'dstream state directory (default ~/.dstream)' },
  emulator_management_port: { type: 'integer', minimum: 1, maximum: 65535, description: 'Service Bus emulator (UseDevelopmentEmulator=true): its management port (default 5300 when the AMQP port is 5672 or unstated)' },
  force_destroy: { type: 'boolean', default: false, description: 'destroy deletes queues that still hold messages (by default it keeps them)' },
  queue_max_size_mb: { type: 'integer', minimum: 1, description: 'created queues: maximum size' },
  queue_lock_duration: { type: 'string', description: 'created queues: peek-lock duration (ISO-8601, e.g. PT1M)' },
  queue_max_delivery_count: { type: 'integer', minimum: 1, description: 'created queues: deliveries before dead-lettering' },
  queue_default_ttl: { type: 'string', description: 'created queues: message time to live (ISO-8601, e.g. P14D)' },
  queue_dead_letter_on_expiration: { type: 'boolean', description: 'created queues: dead-letter expired messages' },
  queue_duplicate_detection: { type: 'boolean', default: true, description: 'created queues: drop replays by MessageId' },
  queue_duplicate_detection_window: { type: 'string', default: 'PT10M', description: 'created queues: how long message ids are remembered' },
  queue_partitioning: { type: 'boolean', description: 'created queues: partitioned' },
  queue_sessions: { type: 'boolean', description: 'created queues: session-enabled (with session_key)' },
  progress_ms: { type: 'integer', minimum: 0, default: 5000, description: 'progress on stderr every so often (0: never)' },
  quiet: { type: 'boolean', default: false, description: 'no progress or summary on stderr' },
} satisfies ConfigSchema;

export interface AsbSinkConfig {
  connection_string?: string;
  namespace?: string;
  template: string;
  body: 'envelope' | 'data';
  session_key?: string;
  linger_ms: number;
  max_batch_messages: number;
  max_retries: number;
  retry_base_ms: number;
  retry_max_ms: number;
  send_timeout_ms: number;
  on_oversize: 'fail' | 'dead-letter';
  dead_letter?: string;
  state_file?: string;
  skip_acknowledged: boolean;
  on_missing_queue: 'fail' | 'create';
  task?: string;
  tables?: string[];
  provisioner: 'auto' | 'sdk' | 'pulumi';
  resource_group?: string;
  namespace_name?: string;
  pulumi_backend_url?: string;
  state_dir?: string;
  emulator_management_port?: number;
  force_destroy: boolean;
  queue_max_size_mb?: number;
  queue_lock_duration?: string;
  queue_max_delivery_count?: number;
  queue_default_ttl?: string;
  queue_dead_letter_on_expiration?: boolean;
  queue_duplicate_detection: boolean;
  queue_duplicate_detection_window: string;
  queue_partitioning?: boolean;
  queue_sessions?: boolean;
  progress_ms: number;
  quiet: boolean;
}

/** Connection string, or the namespace with Azure AD credentials. */
async function connectionOf(config: AsbSinkConfig): Promise<ConnectionOptions> {
  const credential = await credentialFor(config);
  if (credential === undefined) checkConnectionString(config.connection_string!);
  return credential === undefined ? { connectionString: config.connection_string } : { namespace: config.namespace, credential };
}

/** A malformed connection string is a mistake to fix (exit 2), said without the string itself. */
function checkConnectionString(connectionString: string): void {
  let endpoint: string | undefined;
  try {
    endpoint = parseServiceBusConnectionString(connectionString).endpoint;
  } catch (err) {
    throw invalidOption(`connection_string is not a Service Bus connection string (${(err as Error).message}); expected Endpoint=sb://<namespace>.servicebus.windows.net/;SharedAccessKeyName=...;SharedAccessKey=...`);
  }
  if (!/^sb:\/\/[^/]+/.test(endpoint ?? '')) throw invalidOption('connection_string is not a Service Bus connection string: its Endpoint must be sb://<namespace>.servicebus.windows.net/');
}

async function credentialFor(config: AsbSinkConfig): Promise<TokenCredential | undefined> {
  if (config.connection_string !== undefined && config.connection_string !== '') return undefined;
  if (config.namespace === undefined || config.namespace === '') {
    throw invalidOption('asb-sink needs connection_string (or ASB_CONNECTION_STRING), or namespace for Azure AD sign-in');
  }
  const { DefaultAzureCredential } = await import('@azure/identity');
  return new DefaultAzureCredential();
}

/** The last acknowledged checkpoint in asb-sink's state file (and stale temp files of killed saves removed). */
async function loadStateFile(path: string): Promise<CheckpointEnvelope | undefined> {
  const state = await readStateFile(path, 'fix it or remove it');
  return state === undefined ? undefined : checkpoint(state.position, state.source);
}

/** Queue settings for queues asb-sink creates, from its config. */
export function queueSettingsOf(config: AsbSinkConfig): QueueSettings {
  const s: QueueSettings = {
    requiresDuplicateDetection: config.queue_duplicate_detection,
    duplicateDetectionHistoryTimeWindow: config.queue_duplicate_detection_window,
  };
  if (config.queue_max_size_mb !== undefined) s.maxSizeInMegabytes = config.queue_max_size_mb;
  if (config.queue_lock_duration !== undefined) s.lockDuration = config.queue_lock_duration;
  if (config.queue_max_delivery_count !== undefined) s.maxDeliveryCount = config.queue_max_delivery_count;
  if (config.queue_default_ttl !== undefined) s.defaultMessageTimeToLive = config.queue_default_ttl;
  if (config.queue_dead_letter_on_expiration !== undefined) s.deadLetteringOnMessageExpiration = config.queue_dead_letter_on_expiration;
  if (config.queue_partitioning !== undefined) s.enablePartitioning = config.queue_partitioning;
  if (config.queue_sessions !== undefined) s.requiresSession = config.queue_sessions;
  return s;
}

function missingQueueCreator(ctx: ProviderContext<AsbSinkConfig>, connection: ConnectionOptions): (queue: string) => Promise<void> {
  const admin = adminClient(connection, { emulatorManagementPort: ctx.config.emulator_management_port });
  const endpoint = endpointOf(connection);
  return async (queue) => {
    const settings = queueSettingsOf(ctx.config);
    const outcome = await ensureQueue(admin, queue, settings, { task: ctx.config.task, endpoint });
    ctx.log(outcome === 'created' ? `queue ${queue} did not exist: created it in ${endpoint}` : `queue ${queue} exists now (created by someone else)`);
    // The queue as it is decides what delivery promises: say so when that is not effectively-once.
    const actual = outcome === 'created' ? settings : await managed(`read queue "${queue}"`, endpoint, () => admin.getQueue(queue));
    for (const w of queueWarnings(actual)) ctx.log(`warning: queue ${queue}: ${w}`);
  };
}

export async function runAsbSink(ctx: ProviderContext<AsbSinkConfig>): Promise<void> {
  const config = ctx.config;
  const connection = await connectionOf(config);
  const stale = staleResume(ctx.header.savedAt, config.queue_duplicate_detection ? config.queue_duplicate_detection_window : undefined);
  if (stale !== undefined) ctx.log(`warning: ${stale}`);
  const deadLetter: WriteStream | undefined = config.dead_letter === undefined ? undefined : await openDeadLetterFile(config.dead_letter);
  const sinks = new Map<string, ServiceBusSink>();
  const started = Date.now();
  let acked = 0;
  const stateFile = config.state_file;
  const stored = stateFile === undefined ? undefined : await loadStateFile(stateFile);
  // Acknowledgements come faster than fsynced saves: only the latest is written (bounded memory,
  // never behind by more than one save), and the run's end waits for it.
  const saver =
    stateFile === undefined
      ? undefined
      : latestSaver((cp: CheckpointEnvelope) => writeStateFile(stateFile, storedState(cp.data.position, { task: config.task ?? ctx.header.task, source: cp.source })));
  const out = toServiceBus({
    ...connection,
    onMissingQueue: config.on_missing_queue === 'create' ? missingQueueCreator(ctx, connection) : undefined,
    template: config.template,
    body: config.body,
    sessionKey: config.session_key,
    lingerMs: config.linger_ms,
    maxBatchMessages: config.max_batch_messages,
    retry: { maxRetries: config.max_retries, baseDelayMs: config.retry_base_ms, maxDelayMs: config.retry_max_ms },
    sendTimeoutMs: config.send_timeout_ms,
    onOversize: config.on_oversize,
    deadLetter,
    onRetry: (r) => ctx.log(`queue ${r.queue}: ${(r.error as Error).message}; retry ${r.attempt} of ${config.max_retries} in ${r.delayMs} ms`),
    onWarning: ctx.log,
    onSink: (queue, sink) => sinks.set(queue, sink as ServiceBusSink),
    observer: deliveryObserver({ metrics: ctx.metrics, health: ctx.health }),
    onCheckpoint: (cp: CheckpointEnvelope) => {
      acked++;
      ctx.metrics?.checkpointsAcknowledged.inc({ provider: 'asb-sink' });
      saver?.offer(cp);
      // In a pipe, stdout is the end of the line; to an executor, each ack is a protocol line.
      if (!ctx.standalone) ctx.output.write(cp);
    },
  });
  const stats = () => [...sinks.values()].map((s) => s.stats);
  let last = { at: started, stats: stats() };
  const timer =
    config.quiet || config.progress_ms === 0
      ? undefined
      : setInterval(() => {
          const now = { at: Date.now(), stats: stats() };
          ctx.log(progressLine(last, now));
          last = now;
        }, config.progress_ms).unref();
  const skip =
    config.skip_acknowledged && stored !== undefined
      ? skipAcknowledged({ checkpoint: stored, from: stateFile!, onResume: (s) => ctx.log(`skipped ${s.rows} rows up to the checkpoint stored in ${stateFile} (already delivered); delivering from there`) })
      : undefined;
  try {
    await (skip === undefined ? pipeline(ctx.input, out) : pipeline(ctx.input, skip, out));
  } finally {
    if (timer !== undefined) clearInterval(timer);
    // What was acknowledged is stored, also when the run fails.
    await saver?.flush();
    if (deadLetter !== undefined) await new Promise<void>((resolve) => deadLetter.end(() => resolve()));
  }
  if (!config.quiet) ctx.log(summaryLine(stats(), Date.now() - started, acked));
}

/**
 * Duplicate detection remembers MessageIds for its window only: resuming from a position stored
 * longer ago than that, the records read again that were already delivered arrive as new messages.
 */
export function staleResume(savedAt: unknown, window: string | undefined, now = Date.now()): string | undefined {
  // Without duplicate detection plan, init and on_missing_queue have said so already.
  if (typeof savedAt !== 'string' || window === undefined) return undefined;
  const age = now - Date.parse(savedAt);
  const windowMs = durationMs(window);
  if (Number.isNaN(age) || windowMs === undefined || age <= windowMs) return undefined;
  return `resuming from a position stored ${Math.round(age / 60_000)} min ago, longer than the queues' duplicate detection window (${window}): records delivered after it are sent again and Service Bus no longer recognises them as duplicates`;
}

/** The queues a lifecycle verb is about, and the engine to ask. */
async function lifecycle(ctx: ProviderContext<AsbSinkConfig>): Promise<{ engine: InfrastructureEngine; desired: DesiredQueue[] }> {
  const config = ctx.config;
  const task = config.task ?? ctx.header.task;
  if (task === undefined || task === '') {
    throw invalidOption('asb-sink needs the task name (config task, or task in the command header): queues are marked with it');
  }
  const streams = ctx.header.streams ?? config.tables ?? [];
  const desired = desiredQueues(streams, config.template, queueSettingsOf(config));
  const pulumi = config.provisioner === 'pulumi' || (config.provisioner === 'auto' && config.resource_group !== undefined);
  if (pulumi) {
    const namespaceName = config.namespace_name ?? namespaceNameOf(config.connection_string ?? '') ?? config.namespace?.split('.')[0];
    if (config.resource_group === undefined || namespaceName === undefined) {
      throw invalidOption('provisioner "pulumi" needs resource_group, and namespace_name unless the connection string or namespace names it');
    }
    // With a connection at hand, the engine sees queues outside its stack and their message counts.
    const connected = Boolean(config.connection_string) || Boolean(config.namespace);
    const live = connected ? await connectionOf(config).then((c) => ({ admin: adminClient(c, { emulatorManagementPort: config.emulator_management_port }), endpoint: endpointOf(c) })) : {};
    const engine = new PulumiEngine({ task, resourceGroupName: config.resource_group, namespaceName, backendUrl: config.pulumi_backend_url, stateDir: config.state_dir, forceDestroy: config.force_destroy, ...live });
    return { engine, desired };
  }
  const connection = await connectionOf(config);
  return { engine: new AdminEngine(adminClient(connection, { emulatorManagementPort: config.emulator_management_port }), { task, endpoint: endpointOf(connection), forceDestroy: config.force_destroy }), desired };
}

export const asbSink: ProviderDefinition<AsbSinkConfig> = {
  name: 'asb-sink',
  description: 'Delivers dstream envelopes to Azure Service Bus, one queue per table, in order, with checkpoints acknowledged once delivered.',
  config: asbSinkConfig,
  examples: [
    'mssql-cdc --tables Persons,Orders | dstream route | asb-sink --connection-string "$ASB_CONNECTION_STRING"',
    'asb-sink --state-file state.json < routed.ndjson   # connection string from ASB_CONNECTION_STRING',
  ],
  checkConfig: (config) => [
    ...(config.queue_sessions === true && (config.session_key === undefined || config.session_key === '')
      ? ['queue_sessions: session-enabled queues need session_key (the column whose value becomes each message\'s SessionId); Service Bus rejects messages without one']
      : []),
    ...(config.on_oversize === 'dead-letter' && config.dead_letter === undefined ? ['on_oversize: "dead-letter" needs dead_letter = "<file>"'] : []),
  ],
  run: runAsbSink,
  ...infrastructureVerbs(lifecycle),
};
