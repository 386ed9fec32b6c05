/**
 * The administration-client engine: plan, init, status and destroy for a task's queues with only
 * a connection string (Manage rights). Existing queues are compared ignoring case; a queue is the
 * task's when its userMetadata says so, and destroy removes only those.
 */
import type { ServiceBusAdministrationClient, QueueProperties } from '@azure/service-bus';
import type { ResourceReport } from '../protocol/messages.js';
import type { DesiredQueue } from './desired.js';
import type { InfrastructureEngine } from './engine.js';
import { ensureQueue, managed, ownershipOf } from './service-bus-admin.js';
import type { RetryOptions } from '../sinks/service-bus/errors.js';

export interface EngineOptions {
  task: string;
  endpoint: string;
  /** Management calls at once (Service Bus throttles management operations). Default 4. */
  concurrency?: number;
  retry?: RetryOptions;
}

export interface InfraResult {
  resources: ResourceReport[];
  summary: string;
  [key: string]: unknown;
}

export class AdminEngine implements InfrastructureEngine {
  constructor(
    private readonly admin: ServiceBusAdministrationClient,
    private readonly options: EngineOptions,
  ) {}

  private async existing(): Promise<Map<string, QueueProperties>> {
    const found = new Map<string, QueueProperties>();
    await managed('list queues', this.options.endpoint, async () => {
      found.clear();
      for await (const q of this.admin.listQueues()) found.set(q.name.toLowerCase(), q);
    }, this.options.retry);
    return found;
  }

  private owned(q: QueueProperties): boolean {
    return ownershipOf(q.userMetadata)?.task === this.options.task;
  }

  async plan(desired: DesiredQueue[]): Promise<InfraResult> {
    const existing = await this.existing();
    const resources: ResourceReport[] = desired.map((d) => {
      const q = existing.get(d.name.toLowerCase());
      if (q === undefined) return { kind: 'queue', name: d.name, action: 'create', table: display(d) };
      if (!this.owned(q)) return { kind: 'queue', name: q.name, action: 'exists-unmanaged', table: display(d) };
      const { changes, fixed } = drift(q, d);
      const r: ResourceReport = { kind: 'queue', name: q.name, action: changes.length > 0 ? 'update' : 'unchanged', table: display(d) };
      if (changes.length > 0) r.changes = changes.map((c) => `${c.setting}: ${c.from} -> ${c.to}`);
      if (fixed.length > 0) r.warnings = fixed.map((c) => `${c.setting} is ${c.from}, the task asks ${c.to}; Service Bus cannot change it after creation (destroy and init to re-create)`);
      return r;
    });
    const wanted = new Set(desired.map((d) => d.name.toLowerCase()));
    for (const q of existing.values()) {
      if (this.owned(q) && !wanted.has(q.name.toLowerCase())) resources.push({ kind: 'queue', name: q.name, action: 'delete', reason: 'no longer in the task' });
    }
    return { resources, summary: summarize(resources) };
  }

  async init(desired: DesiredQueue[]): Promise<InfraResult> {
    const planned = await this.plan(desired);
    const byName = new Map(desired.map((d) => [d.name.toLowerCase(), d]));
    const creates = planned.resources.filter((r) => r.action === 'create');
    const updates = planned.resources.filter((r) => r.action === 'update');
    await limit(this.options.concurrency ?? 4, updates, async (r) => {
      const d = byName.get(r.name.toLowerCase())!;
      const current = await managed(`read queue "${r.name}"`, this.options.endpoint, () => this.admin.getQueue(r.name), this.options.retry);
      const next = { ...current };
      for (const c of drift(current, d).changes) (next as unknown as Record<string, unknown>)[c.setting] = c.to;
      await managed(`update queue "${r.name}"`, this.options.endpoint, () => this.admin.updateQueue(next), this.options.retry);
    });
    await limit(this.options.concurrency ?? 4, creates, async (r) => {
      const outcome = await ensureQueue(this.admin, r.name, byName.get(r.name.toLowerCase())!.settings, this.options);
      // Another process created it between plan and init: it exists, but it is not ours.
      if (outcome === 'exists') r.action = 'exists-unmanaged';
    });
    // init never deletes: queues no longer in the task are left to destroy.
    const resources = planned.resources.filter((r) => r.action !== 'delete');
    return { resources, summary: summarize(resources, true) };
  }

  async status(desired: DesiredQueue[]): Promise<InfraResult> {
    const existing = await this.existing();
    const resources: ResourceReport[] = desired.map((d) => {
      const q = existing.get(d.name.toLowerCase());
      if (q === undefined) return { kind: 'queue', name: d.name, exists: false, table: display(d) };
      return { kind: 'queue', name: q.name, exists: true, managed: this.owned(q), table: display(d) };
    });
    await addRuntimeCounts(this.admin, resources, this.options);
    const missing = resources.filter((r) => r.exists === false).length;
    return { resources, summary: `${resources.length - missing} of ${resources.length} queues exist${missing > 0 ? `; ${missing} missing: run init` : ''}` };
  }

  /** Deletes the queues this task created; lists the others it left alone. */
  async destroy(): Promise<InfraResult> {
    const existing = await this.existing();
    const resources: ResourceReport[] = [];
    const mine = [...existing.values()].filter((q) => this.owned(q));
    await limit(this.options.concurrency ?? 4, mine, async (q) => {
      await managed(`delete queue "${q.name}"`, this.options.endpoint, () => this.admin.deleteQueue(q.name), this.options.retry);
      resources.push({ kind: 'queue', name: q.name, action: 'delete' });
    });
    for (const q of existing.values()) {
      if (!this.owned(q) && ownershipOf(q.userMetadata) !== undefined) {
        resources.push({ kind: 'queue', name: q.name, action: 'exists-unmanaged', reason: `created by dstream task "${ownershipOf(q.userMetadata)!.task ?? '?'}"` });
      }
    }
    resources.sort((a, b) => a.name.localeCompare(b.name));
    const deleted = resources.filter((r) => r.action === 'delete').length;
    return { resources, summary: `${deleted} destroyed; ${resources.length - deleted} left alone (not created by task "${this.options.task}")` };
  }
}

/** Adds live counts (active, dead-lettered, scheduled messages, size) to the queues that exist. */
export async function addRuntimeCounts(
  admin: ServiceBusAdministrationClient,
  resources: ResourceReport[],
  options: { endpoint: string; concurrency?: number; retry?: RetryOptions },
): Promise<void> {
  await limit(options.concurrency ?? 4, resources.filter((r) => r.exists === true), async (r) => {
    const rt = await managed(`read queue "${r.name}"`, options.endpoint, () => admin.getQueueRuntimeProperties(r.name), options.retry);
    Object.assign(r, { activeMessages: rt.activeMessageCount, deadLetterMessages: rt.deadLetterMessageCount, scheduledMessages: rt.scheduledMessageCount, sizeInBytes: rt.sizeInBytes });
  });
}

/** Settings Service Bus can change on an existing queue, and those fixed at creation. */
const MUTABLE = ['lockDuration', 'maxDeliveryCount', 'defaultMessageTimeToLive', 'deadLetteringOnMessageExpiration', 'duplicateDetectionHistoryTimeWindow', 'maxSizeInMegabytes'] as const;
const FIXED = ['requiresDuplicateDetection', 'requiresSession', 'enablePartitioning'] as const;

interface Change {
  setting: string;
  from: unknown;
  to: unknown;
}

/** Where an existing queue differs from the settings the task states (unstated ones are not compared). */
export function drift(q: QueueProperties, d: DesiredQueue): { changes: Change[]; fixed: Change[] } {
  const has = q as unknown as Record<string, unknown>;
  const want = d.settings as Record<string, unknown>;
  const differ = (k: string) => want[k] !== undefined && has[k] !== want[k];
  return {
    changes: MUTABLE.filter(differ).map((k) => ({ setting: k, from: has[k], to: want[k] })),
    fixed: FIXED.filter(differ).map((k) => ({ setting: k, from: has[k], to: want[k] })),
  };
}

function display(d: DesiredQueue): string {
  return `${d.table.schema ?? 'dbo'}.${d.table.table}`;
}

export function summarize(resources: ResourceReport[], applied = false): string {
  const n = (a: string) => resources.filter((r) => r.action === a).length;
  const verb = applied ? ['created', 'changed', 'destroyed'] : ['to create', 'to change', 'to destroy'];
  const unmanaged = n('exists-unmanaged');
  return `${applied ? 'Applied' : 'Plan'}: ${n('create')} ${verb[0]}, ${n('update')} ${verb[1]}, ${n('delete')} ${verb[2]}${unmanaged > 0 ? `; ${unmanaged} existing queue${unmanaged === 1 ? '' : 's'} not managed by this task` : ''}.`;
}

/** Runs `fn` over `items` with at most `n` at once, keeping the order of results. */
async function limit<T, R>(n: number, items: T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}
