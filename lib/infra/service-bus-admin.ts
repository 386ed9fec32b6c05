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
import { connectionCause, serverDelayMs, type RetryOptions } from '../sinks/service-bus/errors.js';
import { attemptsText, backoffOf, retry, type Verdict } from '../retry.js';
import { settingProblems } from './queue-checks.js';
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

/** Settings Service Bus can change on an existing queue, and those it fixes at creation. */
export const MUTABLE_SETTINGS = ['lockDuration', 'maxDeliveryCount', 'defaultMessageTimeToLive', 'deadLetteringOnMessageExpiration', 'duplicateDetectionHistoryTimeWindow', 'maxSizeInMegabytes'] as const;
export const FIXED_SETTINGS = ['requiresDuplicateDetection', 'requiresSession', 'enablePartitioning'] as const;

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

/** The Service Bus emulator serves its management endpoint on this port, apart from AMQP (5672). */
export const EMULATOR_MANAGEMENT_PORT = 5300;

/**
 * Where the development emulator's management endpoint listens: `given`, else 5300 when the
 * connection string names the emulator's AMQP port (no port, or 5672), else undefined: the same
 * port as AMQP (a gateway that maps both onto one port; give the port when it does not).
 */
export function emulatorManagementPort(connectionString: string, given?: number): number | undefined {
  if (given !== undefined) return given;
  const port = /Endpoint=sb:\/\/[^;/:]+(?::(\d+))?/i.exec(connectionString)?.[1];
  return port === undefined || port === '5672' ? EMULATOR_MANAGEMENT_PORT : undefined;
}

/**
 * The development emulator speaks plain HTTP, like its AMQP side speaks plain TCP, on a port of its
 * own; the SDK builds https URLs on the AMQP host and port regardless, so for
 * `UseDevelopmentEmulator=true` requests are sent over http to the management port.
 */
function emulatorHttp(port: number | undefined): PipelinePolicy {
  return {
    name: 'dstream-emulator-http',
    sendRequest(request, next) {
      const url = new URL(request.url);
      url.protocol = 'http:';
      if (port !== undefined) url.port = String(port);
      request.url = url.toString();
      request.allowInsecureConnection = true;
      return next(request);
    },
  };
}

export interface AdminClientOptions extends ServiceBusAdministrationClientOptions {
  /** The emulator's management port (default 5300; see emulatorManagementPort). */
  emulatorManagementPort?: number;
}

export function adminClient(options: ConnectionOptions, given: AdminClientOptions = {}): ServiceBusAdministrationClient {
  // managed() is the one place that retries, as for sending: the pipeline's own retries are off.
  const { emulatorManagementPort: port, ...rest } = given;
  const clientOptions: ServiceBusAdministrationClientOptions = { ...rest, retryOptions: { maxRetries: 0, ...rest.retryOptions } };
  const { ServiceBusAdministrationClient } = serviceBusSdk();
  if (options.connectionString !== undefined) {
    const admin = new ServiceBusAdministrationClient(options.connectionString, clientOptions);
    // The client builds its own pipeline (additionalPolicies are not applied), so the policy goes
    // onto it directly, last: after signing, just before the request leaves.
    if (/;\s*UseDevelopmentEmulator\s*=\s*true/i.test(options.connectionString)) admin.pipeline.addPolicy(emulatorHttp(emulatorManagementPort(options.connectionString, port)));
    return admin;
  }
  if (options.namespace !== undefined && options.credential !== undefined) {
    return new ServiceBusAdministrationClient(options.namespace, options.credential, clientOptions);
  }
  throw invalidOption('queue management needs a connection string with Manage rights, or a namespace with a credential');
}

const BUSY = new Set(['ServerBusyError', 'ServiceBusy', 'TooManyRequests', 'ServiceUnavailable', 'RequestTimeout']);

/** Management answers worth another try: throttling and busy (with the server's Retry-After), and connection failures. */
function classifyManagement(err: unknown): Verdict {
  const code = (err as { code?: string }).code ?? '';
  const status = (err as { statusCode?: number }).statusCode;
  if (status === 429 || status === 503 || BUSY.has(code)) {
    const after = retryAfterMs(err) ?? serverDelayMs(err);
    return after === undefined ? true : { afterMs: after };
  }
  return connectionCause(err) !== undefined;
}

/** The Retry-After header of an HTTP answer (seconds), in ms. */
function retryAfterMs(err: unknown): number | undefined {
  const headers = (err as { response?: { headers?: { get?(name: string): string | undefined } } }).response?.headers;
  const v = headers?.get?.('retry-after');
  const n = v === undefined ? NaN : Number(v);
  return Number.isFinite(n) && n >= 0 ? n * 1000 : undefined;
}

/** Runs a management call through the retry loop: throttling, busy answers and connection failures are tried again. */
export async function managed<T>(what: string, endpoint: string, op: () => Promise<T>, policy: RetryOptions = {}, signal?: AbortSignal): Promise<T> {
  return retry(op, {
    ...backoffOf(policy, 6),
    signal,
    classify: classifyManagement,
    fail: (err, attempts, info) => {
      const code = (err as { code?: string }).code ?? '';
      const status = (err as { statusCode?: number }).statusCode;
      if (code === 'UnauthorizedRequestError' || status === 401) {
        return new DstreamError(ErrorCodes.UNAUTHORIZED, `${endpoint}: could not ${what}: the credentials need Manage rights`, { cause: err });
      }
      const tries = attemptsText(attempts, info);
      return new DstreamError(ErrorCodes.SERVICE_BUS, `${endpoint}: could not ${what}${tries ? ` ${tries}` : ''}: ${messageOf(err)}`, { cause: err, details: { code, status } });
    },
  });
}

/** The userMetadata that marks a queue as made by dstream for a task. */
export function ownershipMark(task: string | undefined): string {
  const ownership: Ownership = { 'managed-by': 'dstream', ...(task ? { task } : {}) };
  return JSON.stringify(ownership);
}

export function createQueueOptions(settings: QueueSettings, owner: { task?: string }): CreateQueueOptions {
  return { ...DEFAULT_QUEUE_SETTINGS, ...settings, userMetadata: ownershipMark(owner.task) };
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
  const problems = settingProblems(createQueueOptions(settings, owner) as Record<string, unknown>);
  if (problems.length > 0) throw invalidOption(`queue "${name}" cannot be created: settings Service Bus would refuse: ${problems.join('; ')}`, { problems });
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
