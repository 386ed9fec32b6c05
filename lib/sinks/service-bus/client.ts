/**
 * One ServiceBusClient (one AMQP connection) per namespace and credential, shared by every queue
 * of the process and closed when the last sink using it closes.
 */
import type { ServiceBusClient, ServiceBusClientOptions } from '@azure/service-bus';
import type { TokenCredential } from '@azure/core-auth';
import { invalidOption } from '../../errors.js';
import { serviceBusSdk } from './sdk.js';

export interface ConnectionOptions {
  /** `Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...` */
  connectionString?: string;
  /** `<name>.servicebus.windows.net`, with `credential` (Azure AD). */
  namespace?: string;
  credential?: TokenCredential;
}

export interface ClientLease {
  readonly client: ServiceBusClient;
  /** The namespace host, for messages (never the key). */
  readonly endpoint: string;
  release(): Promise<void>;
}

interface Shared {
  client: ServiceBusClient;
  endpoint: string;
  refs: number;
}

const shared = new Map<string, Shared>();
const credentialIds = new WeakMap<object, number>();
let nextCredentialId = 1;

/** dstream retries itself (lib/sinks/service-bus/errors.ts), so the SDK's retries are off. */
const CLIENT_OPTIONS: ServiceBusClientOptions = { retryOptions: { maxRetries: 0, timeoutInMs: 30_000 } };

export function endpointOf(options: ConnectionOptions): string {
  if (options.namespace !== undefined) return options.namespace;
  const m = /Endpoint=sb:\/\/([^;/]+)/i.exec(options.connectionString ?? '');
  return m?.[1] ?? 'unknown namespace';
}

export function acquireClient(options: ConnectionOptions): ClientLease {
  let key: string;
  if (options.connectionString !== undefined) {
    key = `cs:${options.connectionString}`;
  } else if (options.namespace !== undefined && options.credential !== undefined) {
    if (!credentialIds.has(options.credential)) credentialIds.set(options.credential, nextCredentialId++);
    key = `aad:${options.namespace}:${credentialIds.get(options.credential)}`;
  } else {
    throw invalidOption('Service Bus needs a connection string, or a namespace with a credential');
  }
  let entry = shared.get(key);
  if (entry === undefined) {
    const { ServiceBusClient } = serviceBusSdk();
    const client =
      options.connectionString !== undefined
        ? new ServiceBusClient(options.connectionString, CLIENT_OPTIONS)
        : new ServiceBusClient(options.namespace!, options.credential!, CLIENT_OPTIONS);
    entry = { client, endpoint: endpointOf(options), refs: 0 };
    shared.set(key, entry);
  }
  entry.refs++;
  const e = entry;
  let released = false;
  return {
    client: e.client,
    endpoint: e.endpoint,
    async release() {
      if (released) return;
      released = true;
      if (--e.refs === 0) {
        shared.delete(key);
        await e.client.close();
      }
    },
  };
}

/** How many shared clients are open (for tests and diagnostics). */
export function openClients(): number {
  return shared.size;
}
