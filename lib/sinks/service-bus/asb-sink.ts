/**
 * The `asb-sink` output provider: envelopes from stdin to one Service Bus queue per destination.
 * Started by `dstream run` (command header) or in a pipe with options:
 *   mssql-cdc ... | dstream route | asb-sink --connection-string "$ASB" --state-file state.json
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { TokenCredential } from '@azure/core-auth';
import type { ConfigSchema } from '../../config/schema.js';
import { invalidOption } from '../../errors.js';
import type { CheckpointEnvelope } from '../../envelope/types.js';
import { writeFileAtomic } from '../../executor/atomic-file.js';
import type { ProviderContext, ProviderDefinition } from '../../provider/run-provider.js';
import { DEFAULT_TEMPLATE } from '../../streams/destination.js';
import { toServiceBus } from '../deliver.js';
import type { ServiceBusSink } from './sink.js';
import { progressLine, summaryLine } from './progress.js';

export const asbSinkConfig = {
  connection_string: { type: 'string', secret: true, env: 'ASB_CONNECTION_STRING', description: 'Service Bus connection string (Send rights)' },
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
  dead_letter: { type: 'string', description: 'file for dead-lettered records (with on_oversize = dead-letter)' },
  state_file: { type: 'string', description: 'write the last acknowledged checkpoint here, atomically' },
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
  progress_ms: number;
  quiet: boolean;
}

async function credentialFor(config: AsbSinkConfig): Promise<TokenCredential | undefined> {
  if (config.connection_string !== undefined && config.connection_string !== '') return undefined;
  if (config.namespace === undefined || config.namespace === '') {
    throw invalidOption('asb-sink needs connection_string (or ASB_CONNECTION_STRING), or namespace for Azure AD sign-in');
  }
  const { DefaultAzureCredential } = await import('@azure/identity');
  return new DefaultAzureCredential();
}

export async function runAsbSink(ctx: ProviderContext<AsbSinkConfig>): Promise<void> {
  const config = ctx.config;
  if (config.on_oversize === 'dead-letter' && config.dead_letter === undefined) {
    throw invalidOption('on_oversize = "dead-letter" needs dead_letter = "<file>"');
  }
  const credential = await credentialFor(config);
  const deadLetter: WriteStream | undefined = config.dead_letter === undefined ? undefined : createWriteStream(config.dead_letter, { flags: 'a' });
  const sinks = new Map<string, ServiceBusSink>();
  const started = Date.now();
  let acked = 0;
  const out = toServiceBus({
    ...(credential === undefined ? { connectionString: config.connection_string } : { namespace: config.namespace, credential }),
    template: config.template,
    body: config.body,
    sessionKey: config.session_key,
    lingerMs: config.linger_ms,
    maxBatchMessages: config.max_batch_messages,
    retry: { maxRetries: config.max_retries, baseDelayMs: config.retry_base_ms, maxDelayMs: config.retry_max_ms },
    sendTimeoutMs: config.send_timeout_ms,
    onOversize: config.on_oversize,
    deadLetter,
    onRetry: (r) => ctx.log(`queue ${r.queue}: ${(r.error as Error).message}; retry ${r.attempt} in ${r.delayMs} ms`),
    onSink: (queue, sink) => sinks.set(queue, sink as ServiceBusSink),
    onCheckpoint: async (cp: CheckpointEnvelope) => {
      acked++;
      if (config.state_file !== undefined) {
        await writeFileAtomic(config.state_file, `${JSON.stringify({ checkpoint: cp, savedAt: new Date().toISOString() })}\n`);
      }
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
  try {
    await pipeline(ctx.input, out);
  } finally {
    if (timer !== undefined) clearInterval(timer);
    if (deadLetter !== undefined) await new Promise<void>((resolve) => deadLetter.end(() => resolve()));
  }
  if (!config.quiet) ctx.log(summaryLine(stats(), Date.now() - started, acked));
}

export const asbSink: ProviderDefinition<AsbSinkConfig> = {
  name: 'asb-sink',
  description: 'Delivers dstream envelopes to Azure Service Bus, one queue per table, in order, with checkpoints acknowledged once delivered.',
  config: asbSinkConfig,
  examples: [
    'mssql-cdc --tables Persons,Orders | dstream route | asb-sink --connection-string "$ASB_CONNECTION_STRING"',
    'asb-sink --state-file state.json < routed.ndjson   # connection string from ASB_CONNECTION_STRING',
  ],
  run: runAsbSink,
};
