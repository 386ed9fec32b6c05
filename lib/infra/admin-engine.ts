/**
 * The administration-client engine: plan, init, status and destroy for a task's queues with only
 * a connection string (Manage rights). Existing queues are compared ignoring case; a queue is the
 * task's when its userMetadata says so, and destroy removes only those.
 */
import type { ServiceBusAdministrationClient, QueueProperties } from '@azure/service-bus';
import type { ResourceReport } from '../protocol/messages.js';
import type { DesiredQueue } from './desired.js';
import type { InfraResult, InfrastructureEngine } from './engine.js';
import { queueWarnings, refusal, sameSetting } from './queue-checks.js';
import { applySteps, diff, limit, removal, type Step } from './reconcile.js';
import { ensureQueue, FIXED_SETTINGS, managed, MUTABLE_SETTINGS, ownershipOf } from './service-bus-admin.js';
import type { RetryOptions } from '../sinks/service-bus/errors.js';

export interface EngineOptions {
  task: string;
  endpoint: string;
  /** Management calls at once (Service Bus throttles management operations). Default 4. */
  concurrency?: number;
  retry?: RetryOptions;
  /** destroy deletes queues that still hold messages. */
  forceDestroy?: boolean;
}

/** The namespace's queues by lower-case name. */
export async function listQueues(admin: ServiceBusAdministrationClient, options: { endpoint: string; retry?: RetryOptions }): Promise<Map<string, QueueProperties>> {
  const found = new Map<string, QueueProperties>();
  await managed('list queues', options.endpoint, async () => {
    found.clear();
    for await (const q of admin.listQueues()) found.set(q.name.toLowerCase(), q);
  }, options.retry);
  return found;
}

export class AdminEngine implements InfrastructureEngine {
  constructor(
    private readonly admin: ServiceBusAdministrationClient,
    private readonly options: EngineOptions,
  ) {}

  private existing(): Promise<Map<string, QueueProperties>> {
    return listQueues(this.admin, this.options);
  }

  private owned(q: QueueProperties): boolean {
    return ownershipOf(q.userMetadata)?.task === this.options.task;
  }

  /** The steps from the namespace's queues to the desired ones. */
  private async steps(desired: DesiredQueue[]): Promise<Step[]> {
    return diff(desired, (await this.existing()).values(), {
      key: (d) => d.name.toLowerCase(),
      actualKey: (q) => q.name.toLowerCase(),
      decide: (d, q) => this.decide(d, q),
      // init never deletes: a queue whose table left the task (or a discovery that came back empty) stays.
      leftover: (q) => (this.owned(q) ? { report: { kind: 'queue', name: q.name, action: 'unchanged', reason: 'no longer in the task: kept (destroy removes it)' } } : undefined),
    });
  }

  private decide(d: DesiredQueue, q: QueueProperties | undefined): Step {
    // Drift is computed for the task's queues only; the effectively-once warnings hold for any queue written to.
    const warn = (report: Step['report'], extra: string[] = []) => {
      const warnings = [...extra, ...queueWarnings(q ?? d.settings)];
      if (warnings.length > 0) report.warnings = warnings;
      return report;
    };
    if (q === undefined) {
      const report = warn({ kind: 'queue', name: d.name, action: 'create', table: display(d) });
      const apply = async () => {
        const outcome = await ensureQueue(this.admin, d.name, d.settings, this.options);
        // Another process created it between plan and init: it exists, but it is not ours.
        if (outcome === 'exists') report.action = 'exists-unmanaged';
      };
      return { report, apply };
    }
    if (!this.owned(q)) return { report: warn({ kind: 'queue', name: q.name, action: 'exists-unmanaged', table: display(d) }) };
    const { changes, fixed } = drift(q, d);
    const report: Step['report'] = { kind: 'queue', name: q.name, action: changes.length > 0 ? 'update' : 'unchanged', table: display(d) };
    if (changes.length > 0) report.changes = changes.map((c) => `${c.setting}: ${c.from} -> ${c.to}`);
    warn(report, fixed.map((c) => `${c.setting} is ${c.from}, the task asks ${c.to}; Service Bus cannot change it after creation (destroy and init to re-create)`));
    if (changes.length === 0) return { report };
    const apply = async () => {
      const current = await managed(`read queue "${q.name}"`, this.options.endpoint, () => this.admin.getQueue(q.name), this.options.retry);
      const next = { ...current };
      for (const c of drift(current, d).changes) (next as unknown as Record<string, unknown>)[c.setting] = c.to;
      await managed(`update queue "${q.name}"`, this.options.endpoint, () => this.admin.updateQueue(next), this.options.retry);
    };
    return { report, apply };
  }

  async plan(desired: DesiredQueue[]): Promise<InfraResult> {
    const resources = (await this.steps(desired)).map((s) => s.report);
    return { resources, summary: summarize(resources) };
  }

  async init(desired: DesiredQueue[]): Promise<InfraResult> {
    const resources = await applySteps(await this.steps(desired), { concurrency: this.options.concurrency ?? 4 });
    return { resources, summary: summarize(resources, true) };
  }

  async status(desired: DesiredQueue[]): Promise<InfraResult> {
    const existing = await this.existing();
    const resources: ResourceReport[] = desired.map((d) => {
      const q = existing.get(d.name.toLowerCase());
      if (q === undefined) return { kind: 'queue', name: d.name, exists: false, table: display(d) };
      const warnings = queueWarnings(q);
      return { kind: 'queue', name: q.name, exists: true, managed: this.owned(q), table: display(d), ...(warnings.length > 0 ? { warnings } : {}) };
    });
    await addRuntimeCounts(this.admin, resources, this.options);
    const missing = resources.filter((r) => r.exists === false).length;
    return { resources, summary: `${resources.length - missing} of ${resources.length} queues exist${missing > 0 ? `; ${missing} missing: run init` : ''}` };
  }

  /** Deletes the queues this task created and that hold no messages (all of them with forceDestroy); lists the others it left alone. */
  async destroy(): Promise<InfraResult> {
    const existing = await this.existing();
    const mine: ResourceReport[] = [...existing.values()].filter((q) => this.owned(q)).map((q) => ({ kind: 'queue', name: q.name, exists: true }));
    if (this.options.forceDestroy !== true) await addRuntimeCounts(this.admin, mine, this.options);
    const held = new Map(mine.map((r) => [r.name, Number(r.totalMessages ?? 0)]));
    const steps = removal(existing.values(), (q): Step | undefined => {
      if (!this.owned(q)) {
        const by = ownershipOf(q.userMetadata);
        return by === undefined ? undefined : { report: { kind: 'queue', name: q.name, action: 'exists-unmanaged', reason: `created by dstream task "${by.task ?? '?'}"` } };
      }
      const messages = held.get(q.name) ?? 0;
      if (messages > 0) return { report: { kind: 'queue', name: q.name, action: 'blocked', warnings: [refusal(q.name, messages)] } };
      return {
        report: { kind: 'queue', name: q.name, action: 'delete' },
        apply: async () => {
          await managed(`delete queue "${q.name}"`, this.options.endpoint, () => this.admin.deleteQueue(q.name), this.options.retry);
        },
      };
    });
    const resources = await applySteps(steps, { concurrency: this.options.concurrency ?? 4 });
    resources.sort((a, b) => a.name.localeCompare(b.name));
    const deleted = resources.filter((r) => r.action === 'delete').length;
    const kept = resources.filter((r) => r.action === 'blocked').length;
    return { resources, summary: `${deleted} destroyed; ${kept > 0 ? `${kept} kept (they hold messages); ` : ''}${resources.length - deleted - kept} left alone (not created by task "${this.options.task}")` };
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
    const total = rt.totalMessageCount ?? rt.activeMessageCount + rt.deadLetterMessageCount + rt.scheduledMessageCount;
    Object.assign(r, { activeMessages: rt.activeMessageCount, deadLetterMessages: rt.deadLetterMessageCount, scheduledMessages: rt.scheduledMessageCount, sizeInBytes: rt.sizeInBytes, totalMessages: total });
  });
}


interface Change {
  setting: string;
  from: unknown;
  to: unknown;
}

/** Where an existing queue differs from the settings the task states (unstated ones are not compared). */
export function drift(q: QueueProperties, d: DesiredQueue): { changes: Change[]; fixed: Change[] } {
  const has = q as unknown as Record<string, unknown>;
  const want = d.settings as Record<string, unknown>;
  const differ = (k: string) => want[k] !== undefined && !sameSetting(k, has[k], want[k], q);
  return {
    changes: MUTABLE_SETTINGS.filter(differ).map((k) => ({ setting: k, from: has[k], to: want[k] })),
    fixed: FIXED_SETTINGS.filter(differ).map((k) => ({ setting: k, from: has[k], to: want[k] })),
  };
}

function display(d: DesiredQueue): string {
  return `${d.table.schema ?? 'dbo'}.${d.table.table}`;
}

export function summarize(resources: ResourceReport[], applied = false): string {
  const n = (a: string) => resources.filter((r) => r.action === a || (a === 'update' && r.action === 'replace' && !applied)).length;
  const verb = applied ? ['created', 'changed', 'destroyed'] : ['to create', 'to change', 'to destroy'];
  const unmanaged = n('exists-unmanaged');
  return `${applied ? 'Applied' : 'Plan'}: ${n('create')} ${verb[0]}, ${n('update')} ${verb[1]}, ${n('delete')} ${verb[2]}${unmanaged > 0 ? `; ${unmanaged} existing queue${unmanaged === 1 ? '' : 's'} not managed by this task` : ''}.`;
}

