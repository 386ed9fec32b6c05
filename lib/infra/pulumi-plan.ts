/**
 * What the Pulumi engine asks Pulumi to do, decided from three facts: the queues the task wants,
 * the queues the stack already holds, and the queues the namespace has (through the
 * administration client, when a connection is at hand). Kept apart from the Automation API so
 * that the rules that protect data are plain functions:
 * - init only adds or updates: every queue of the stack stays declared (a table missing from
 *   discovery, or an empty discovery, never turns into a delete), and every queue carries
 *   retainOnDelete, so that even a program that drops one leaves the queue in Azure;
 * - a queue that exists outside the stack is never "created" (azure-native would fail): one
 *   marked as this task's is adopted with an import, anyone else's is left alone and reported;
 * - settings fixed at creation are never changed by init (Service Bus refuses; a replace would
 *   delete the messages): plan shows the replace with a warning, init keeps the queue;
 * - destroy deletes only queues that hold no messages, unless told to.
 */
import { invalidOption } from '../errors.js';
import type { ResourceReport } from '../protocol/messages.js';
import type { DesiredQueue } from './desired.js';
import { queueWarnings, refusal } from './queue-checks.js';
import { FIXED_SETTINGS, ownershipMark, ownershipOf, type QueueSettings } from './service-bus-admin.js';

export const QUEUE_TYPE = 'azure-native:servicebus:Queue';

/** Where the queues live. */
export interface AzureTarget {
  resourceGroupName: string;
  namespaceName: string;
}

/** A queue as the stack's state records it. */
export interface StackQueue {
  /** The logical name, which is the queue name. */
  name: string;
  id?: string;
  inputs: Record<string, unknown>;
}

/** A queue as the namespace reports it. */
export interface LiveQueue {
  name: string;
  userMetadata?: string;
  settings: QueueSettings;
}

/** One Queue resource of the program, with its options. */
export interface QueueDeclaration {
  name: string;
  args: Record<string, unknown>;
  retainOnDelete: boolean;
  /** Adopt the existing queue of this name (import by its Azure resource id). */
  adopt?: boolean;
  ignoreChanges?: string[];
  replaceOnChanges?: string[];
}

export interface ProgramPlan {
  declarations: QueueDeclaration[];
  /** What to report per queue; preview or up events fill in the action of the declared ones. */
  reports: ResourceReport[];
}

/** Pulumi stack names: letters, digits, `-`, `_`, `.`; at most 100 characters (pulumi/pulumi tokens.ValidateStackName). */
export function checkStackName(task: string): string {
  if (!/^[A-Za-z0-9_.-]{1,100}$/.test(task)) {
    throw invalidOption(`task "${task}" cannot name a Pulumi stack: use at most 100 letters, digits, "-", "_" or "."`, { task });
  }
  return task;
}

/** Queue inputs for azure-native from dstream's queue settings (the names match QueueArgs), with the ownership mark. */
export function queueArgs(d: DesiredQueue, target: AzureTarget, task: string): Record<string, unknown> {
  const args: Record<string, unknown> = { queueName: d.name, namespaceName: target.namespaceName, resourceGroupName: target.resourceGroupName };
  for (const [k, v] of Object.entries(d.settings)) if (v !== undefined) args[k] = v;
  args.userMetadata = ownershipMark(task);
  return args;
}

/** Fixed-at-creation settings where the stack's queue and the task differ. */
export function fixedChanges(has: Record<string, unknown>, want: QueueSettings): string[] {
  const w = want as Record<string, unknown>;
  return FIXED_SETTINGS.filter((k) => w[k] !== undefined && (has[k] ?? false) !== w[k]).map(
    (k) => `${k} is ${String(has[k] ?? false)}, the task asks ${String(w[k])}; Service Bus fixes it at creation: init keeps the queue as it is (destroy and init to re-create it, which deletes its messages)`,
  );
}

const tableOf = (d: DesiredQueue) => `${d.table.schema ?? 'dbo'}.${d.table.table}`;

/**
 * The program for `plan` (preview) or `init` (up). `live` is undefined when no connection is at
 * hand to list the namespace: then queues outside the stack cannot be seen, and plan says so.
 */
export function programPlan(mode: 'plan' | 'init', desired: DesiredQueue[], stack: StackQueue[], live: Map<string, LiveQueue> | undefined, target: AzureTarget, task: string): ProgramPlan {
  const inStack = new Map(stack.map((s) => [s.name.toLowerCase(), s]));
  const declarations: QueueDeclaration[] = [];
  const reports: ResourceReport[] = [];
  const wanted = new Set<string>();
  for (const d of desired) {
    const key = d.name.toLowerCase();
    wanted.add(key);
    const args = queueArgs(d, target, task);
    const report: ResourceReport = { kind: 'queue', name: d.name, table: tableOf(d) };
    const warnings: string[] = [];
    const had = inStack.get(key);
    const q = live?.get(key);
    if (had !== undefined) {
      warnings.push(...fixedChanges(had.inputs, d.settings));
      declarations.push(mode === 'plan' ? { name: d.name, args, retainOnDelete: true, replaceOnChanges: [...FIXED_SETTINGS] } : { name: d.name, args, retainOnDelete: true, ignoreChanges: [...FIXED_SETTINGS] });
    } else if (q !== undefined) {
      const owner = ownershipOf(q.userMetadata);
      if (owner !== undefined && (owner.task === undefined || owner.task === task)) {
        // Made for this task by on_missing_queue = "create" or the sdk provisioner: adopt it.
        report.action = 'exists';
        report.reason = mode === 'plan' ? 'exists outside the stack, marked as this task\'s: init adopts it (import)' : 'adopted into the stack (import)';
        warnings.push(...fixedChanges(q.settings as Record<string, unknown>, d.settings));
        // An import must match the queue as it is; a second up then applies the task's settings.
        if (mode === 'init') declarations.push({ name: d.name, args: asFound(args, q), retainOnDelete: true, adopt: true, ignoreChanges: [...FIXED_SETTINGS] });
      } else {
        report.action = 'exists-unmanaged';
        report.reason = owner !== undefined ? `created by dstream task "${owner.task}": left alone` : 'exists, not created by dstream: left alone (messages are still sent to it)';
      }
      warnings.push(...queueWarnings(q.settings));
    } else {
      if (live === undefined && mode === 'plan') warnings.push('no connection string or namespace to list the queues outside the stack: a queue that exists already would make init fail');
      declarations.push({ name: d.name, args, retainOnDelete: true });
    }
    if (had !== undefined || q === undefined) warnings.push(...queueWarnings(d.settings));
    if (warnings.length > 0) report.warnings = warnings;
    reports.push(report);
  }
  // Queues the stack holds but the task no longer names stay exactly as they are: only destroy removes.
  for (const s of stack) {
    if (wanted.has(s.name.toLowerCase())) continue;
    declarations.push({ name: s.name, args: s.inputs, retainOnDelete: true });
    reports.push({ kind: 'queue', name: s.name, reason: 'no longer in the task: kept (destroy removes it)' });
  }
  return { declarations, reports };
}

export interface DestroyPlan {
  /** Every stack queue, with retainOnDelete off for those to delete: applied first. */
  release: QueueDeclaration[];
  /** What remains declared afterwards (the queues kept); empty: destroy the stack. */
  keep: QueueDeclaration[];
  reports: ResourceReport[];
}

/**
 * Which stack queues destroy removes. `messages` holds live counts; a queue without a count (no
 * connection to read it) is kept like one with messages, unless `force`.
 */
export function destroyPlan(stack: StackQueue[], messages: Map<string, number>, force: boolean): DestroyPlan {
  const release: QueueDeclaration[] = [];
  const keep: QueueDeclaration[] = [];
  const reports: ResourceReport[] = [];
  for (const s of stack) {
    const n = messages.get(s.name.toLowerCase());
    const refuse = !force && (n === undefined || n > 0);
    release.push({ name: s.name, args: s.inputs, retainOnDelete: refuse });
    if (refuse) {
      keep.push({ name: s.name, args: s.inputs, retainOnDelete: true });
      reports.push({ kind: 'queue', name: s.name, action: 'blocked', warnings: [refusal(s.name, n)] });
    } else reports.push({ kind: 'queue', name: s.name, action: 'delete' });
  }
  return { release, keep, reports };
}

/** The task's inputs with every stated setting as the queue has it now (what an import must match). */
function asFound(args: Record<string, unknown>, q: LiveQueue): Record<string, unknown> {
  const has = q.settings as Record<string, unknown>;
  const out: Record<string, unknown> = { ...args, userMetadata: q.userMetadata };
  for (const k of Object.keys(args)) if (has[k] !== undefined) out[k] = has[k];
  if (q.userMetadata === undefined) delete out.userMetadata;
  return out;
}
