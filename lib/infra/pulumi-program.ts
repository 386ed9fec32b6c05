/**
 * The inline Pulumi program: one azure-native Service Bus Queue per declaration (lib/infra/
 * pulumi-plan.ts decides which, with which options), with an explicit queueName, in the
 * configured resource group and namespace. azure-native is imported through its subpath: the
 * package root costs seconds and hundreds of MB.
 */
import type { AzureTarget, QueueDeclaration } from './pulumi-plan.js';

/** `Endpoint=sb://shop-prod.servicebus.windows.net/;...` -> `shop-prod`. */
export function namespaceNameOf(connectionString: string): string | undefined {
  const m = /Endpoint=sb:\/\/([^.;/:]+)\./i.exec(connectionString);
  return m?.[1];
}

/** The Azure resource id of a queue, which an import names. */
export function queueResourceId(subscriptionId: string, target: AzureTarget, queue: string): string {
  return `/subscriptions/${subscriptionId}/resourceGroups/${target.resourceGroupName}/providers/Microsoft.ServiceBus/namespaces/${target.namespaceName}/queues/${queue}`;
}

export function queueProgram(declarations: QueueDeclaration[], target: AzureTarget): () => Promise<Record<string, unknown>> {
  return async () => {
    const servicebus = await import('@pulumi/azure-native/servicebus/index.js');
    let subscriptionId: string | undefined;
    if (declarations.some((d) => d.adopt === true)) {
      const { getClientConfig } = await import('@pulumi/azure-native/authorization/getClientConfig.js');
      subscriptionId = (await getClientConfig()).subscriptionId;
    }
    const queues = declarations.map((d) => {
      const options: Record<string, unknown> = { retainOnDelete: d.retainOnDelete };
      if (d.adopt === true) options.import = queueResourceId(subscriptionId!, target, String(d.args.queueName ?? d.name));
      if (d.ignoreChanges !== undefined) options.ignoreChanges = d.ignoreChanges;
      if (d.replaceOnChanges !== undefined) options.replaceOnChanges = d.replaceOnChanges;
      return new servicebus.Queue(d.name, d.args as never, options);
    });
    return { queues: queues.map((q) => q.name), namespace: target.namespaceName, resourceGroup: target.resourceGroupName };
  };
}
