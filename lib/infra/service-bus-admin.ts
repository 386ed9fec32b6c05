/**
 * Queue management through the Service Bus administration client (ATOM over HTTPS), for users who
 * hold a connection string with Manage rights. Creating is idempotent (an existing queue is
 * success) and marks the queue as the task's in its userMetadata, so that `destroy` can later
 * remove only what dstream created.
 */
import type { ServiceBusAdministrationClient, CreateQueueOptions, ServiceBusAdministrationClientOptions } from '@azure/service-bus';
import { serviceBusSdk } from '../sinks/service-bus/sdk.js';
import type { PipelinePolicy } from '@azure/core-rest-pipeline';
import { DstreamError, ErrorCodes, invalidOption, messageOf } from '../errors.js';
import { backoffDelay, type RetryOptions } from '../sinks/service-bus/errors.js';
import { endpointOf, type ConnectionOptions } from '../sinks/service-bus/client.js';

/** Queue settings a task asks for; ISO-8601 durations (`PT1M`, `P14D`). */
export interface QueueSettings {
  maxSizeInMegabytes?: number;
  lockDuration?: string;
  maxDeliveryCount?: number;
  defaultMessageTimeToLive?: string;
  deadLetteringOnMessageExpiration?: boolean;
  /** On by default: dstream's message ids are deterministic, so replays collapse. */
  requiresDuplicateDetection?: boolean;
  duplicateDetectionHistoryTimeWindow?: string;
  enablePartitioning?: boolean;
  requiresSession?: boolean;
}

export const DEFAULT_QUEUE_SETTINGS: QueueSettings = { requiresDuplicateDetection: true, duplicateDetectionHistoryTimeWindow: 'PT10M' };

/** What dstream writes in userMetadata of the queues it creates. */
export interface Ownership {
  'managed-by': 'dstream';
  task?: string;
}

export function ownershipOf(userMetadata: string | undefined): Ownership | undefined {
  if (userMetadata === undefined) return undefined;
  try {
    const v = JSON.parse(userMetadata) as Partial<Ownership>;
    return v?.['managed-by'] === 'dstream' ? (v as Ownership) : undefined;
  } catch {
    return undefined; // someone else's metadata: not ours
  }
}

/**
 * The development emulator speaks plain HTTP, like its AMQP side speaks plain TCP; the SDK builds
 * https URLs regardless, so for `UseDevelopmentEmulator=true` requests are sent over http.
 */
const emulatorHttp: PipelinePolicy = {
  name: 'dstream-emulator-http',
  sendRequest(request, next) {
    request.url = request.url.replace(/^https:/, 'http:');
    request.allowInsecureConnection = true;
    return next(request);
  },
};

export function adminClient(options: ConnectionOptions, given: ServiceBusAdministrationClientOptions = {}): ServiceBusAdministrationClient {
  // managed() is the one place that retries, as for sending: the pipeline's own retries are off.
  const clientOptions: ServiceBusAdministrationClientOptions = { ...given, retryOptions: { maxRetries: 0, ...given.retryOptions } };
  const { ServiceBusAdministrationClient } = serviceBusSdk();
  if (options.connectionString !== undefined) {
    const admin = new ServiceBusAdministrationClient(options.connectionString, clientOptions);
    // The client builds its own pipeline (additionalPolicies are not applied), so the policy goes
    // onto it directly, last: after signing, just before the request leaves.
    if (/;\s*UseDevelopmentEmulator\s*=\s*true/i.test(options.connectionString)) admin.pipeline.addPolicy(emulatorHttp);
    return admin;
  }
  if (options.namespace !== undefined && options.credential !== undefined) {
    return new ServiceBusAdministrationClient(options.namespace, options.credential, clientOptions);
  }
  throw invalidOption('queue management needs a connection string with Manage rights, or a namespace with a credential');
}

const THROTTLED = new Set(['ServerBusyError', 'ServiceBusy', 'TooManyRequests', 'ServiceUnavailable', 'RequestTimeout', 'ECONNRESET', 'ETIMEDOUT', 'ECONNREFUSED']);

/** Runs a management call, retrying throttling and busy answers with jittered backoff. */
export async function managed<T>(what: string, endpoint: string, op: () => Promise<T>, retry: RetryOptions = {}): Promise<T> {
  const max = retry.maxRetries ?? 6;
  for (let attempt = 0; ; attempt++) {
    try {
      return await op();
    } catch (err) {
      const code = (err as { code?: string }).code ?? '';
      const status = (err as { statusCode?: number }).statusCode;
      const transient = THROTTLED.has(code) || status === 429 || status === 503;
      if (!transient || attempt >= max) {
        if (code === 'UnauthorizedRequestError' || status === 401) {
          throw new DstreamError(ErrorCodes.UNAUTHORIZED, `${endpoint}: could not ${what}: the credentials need Manage rights`, { cause: err });
        }
        throw new DstreamError(ErrorCodes.SERVICE_BUS, `${endpoint}: could not ${what}${attempt > 0 ? ` after ${attempt + 1} attempts` : ''}: ${messageOf(err)}`, {
          cause: err,
          details: { code, status },
        });
      }
      await new Promise((r) => setTimeout(r, backoffDelay(attempt, retry)));
    }
  }
}

export function createQueueOptions(settings: QueueSettings, owner: { task?: string }): CreateQueueOptions {
  const ownership: Ownership = { 'managed-by': 'dstream', ...(owner.task ? { task: owner.task } : {}) };
  return { ...DEFAULT_QUEUE_SETTINGS, ...settings, userMetadata: JSON.stringify(ownership) };
}

/**
 * Creates the queue unless it exists. 'created' when this call made it, 'exists' when it was
 * there already (made by anyone: the answer to a race is success too).
 */
export async function ensureQueue(
  admin: ServiceBusAdministrationClient,
  name: string,
  settings: QueueSettings,
  owner: { task?: string; endpoint?: string; retry?: RetryOptions } = {},
): Promise<'created' | 'exists'> {
  const endpoint = owner.endpoint ?? 'Service Bus';
  try {
    await managed(`create queue "${name}"`, endpoint, () => admin.createQueue(name, createQueueOptions(settings, owner)), owner.retry);
    return 'created';
  } catch (err) {
    const code = ((err as { cause?: { code?: string } }).cause ?? {}).code;
    if (code === 'MessageEntityAlreadyExistsError') return 'exists';
    throw err;
  }
}

export { endpointOf };
