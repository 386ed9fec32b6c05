/**
 * The one lifecycle step of every resource a task needs (Service Bus queues, CDC on tables, output
 * files): what is desired and what is actually there are diffed into one step per resource, whose
 * report says the action (create, update, unchanged, exists-unmanaged, delete, blocked); plan shows
 * the steps, init and destroy apply them. What a resource is, how two are compared and how a change
 * is made belong to each kind; the shape of the step, its order and its concurrency are here.
 */
import type { ResourceReport } from '../protocol/messages.js';

/**
 * create, update, unchanged, delete; exists-unmanaged: there, and not this task's (left alone);
 * blocked: cannot be made so, `warnings` say what to fix first. (Pulumi adds replace and exists.)
 */
export type ReconcileAction = NonNullable<ResourceReport['action']>;

/** One resource's step: its report (whose `action` says what to do) and, for a change, how to make it. */
export interface Step {
  report: ResourceReport & { action: ReconcileAction; warnings?: string[] };
  /** Makes the change; it may amend the report (a queue created meanwhile by someone else). */
  apply?: () => Promise<void>;
}

export interface Reconciler<D, A> {
  /** The identity of a desired item, compared with `actualKey` (a case-folded name where names ignore case). */
  key(desired: D): string;
  actualKey(actual: A): string;
  /** The step for a desired item, given what exists under its key (undefined: nothing). */
  decide(desired: D, actual: A | undefined): Step;
  /** The step for an actual item that no desired one names; undefined leaves it out. */
  leftover?(actual: A): Step | undefined;
}

/** The steps that bring `actual` to `desired`: one per desired item in its order, then the leftovers in theirs. */
export function diff<D, A>(desired: Iterable<D>, actual: Iterable<A>, r: Reconciler<D, A>): Step[] {
  const found = new Map<string, A>();
  for (const a of actual) found.set(r.actualKey(a), a);
  const steps: Step[] = [];
  const named = new Set<string>();
  for (const d of desired) {
    const key = r.key(d);
    named.add(key);
    steps.push(r.decide(d, found.get(key)));
  }
  if (r.leftover !== undefined) {
    for (const [key, a] of found) {
      if (named.has(key)) continue;
      const step = r.leftover(a);
      if (step !== undefined) steps.push(step);
    }
  }
  return steps;
}

/** The steps that remove what exists, where nothing is desired (destroy): `leftover` decides each. */
export function removal<A>(actual: Iterable<A>, leftover: (actual: A) => Step | undefined): Step[] {
  return [...actual].flatMap((a) => leftover(a) ?? []);
}

/** What stops the steps from being applied: the warnings of the blocked ones. */
export function problemsOf(steps: Step[]): string[] {
  return steps.filter((s) => s.report.action === 'blocked').flatMap((s) => s.report.warnings ?? [`${s.report.kind} ${s.report.name} is blocked`]);
}

export interface ApplyOptions {
  /** Changes made at once. Default 1: in the steps' order. */
  concurrency?: number;
  /** Actions applied one after the other, each all done before the next starts. Default: update, create, delete. */
  order?: ReconcileAction[];
}

/** Applies the steps' changes and returns their reports, in the steps' order. */
export async function applySteps(steps: Step[], options: ApplyOptions = {}): Promise<ResourceReport[]> {
  for (const action of options.order ?? ['update', 'create', 'delete']) {
    const todo = steps.filter((s) => s.report.action === action && s.apply !== undefined);
    await limit(options.concurrency ?? 1, todo, (s) => s.apply!());
  }
  return steps.map((s) => s.report);
}

/** Runs `fn` over `items` with at most `n` at once, keeping the order of results. */
export async function limit<T, R>(n: number, items: T[], fn: (item: T) => Promise<R>): Promise<R[]> {
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
