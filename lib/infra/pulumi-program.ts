/**
 * The inline Pulumi program: one azure-native Service Bus Queue per desired queue, with an explicit
 * queueName, in the configured resource group and namespace. azure-native is imported through
 * its subpath: the package root costs seconds and hundreds of MB.
 */
import type { DesiredQueue } from './desired.js';

export interface AzureTarget {
  resourceGroupName: string;
  namespaceName: string;
}

/** `Endpoint=sb://shop-prod.servicebus.windows.net/;...` -> `shop-prod`. */
export function namespaceNameOf(connectionString: string): string | undefined {
  const m = /Endpoint=sb:\/\/([^.;/:]+)\./i.exec(connectionString);
  return m?.[1];
}

/** Queue inputs for azure-native from dstream's queue settings (the names match QueueArgs). */
export function queueArgs(d: DesiredQueue, target: AzureTarget): Record<string, unknown> {
  const args: Record<string, unknown> = { queueName: d.name, namespaceName: target.namespaceName, resourceGroupName: target.resourceGroupName };
  for (const [k, v] of Object.entries(d.settings)) if (v !== undefined) args[k] = v;
  return args;
}

export function queueProgram(desired: DesiredQueue[], target: AzureTarget): () => Promise<Record<string, unknown>> {
  return async () => {
    const servicebus = await import('@pulumi/azure-native/servicebus/index.js');
    const queues = desired.map((d) => new servicebus.Queue(d.name, queueArgs(d, target) as never));
    return { queues: queues.map((q) => q.name), namespace: target.namespaceName, resourceGroup: target.resourceGroupName };
  };
}
