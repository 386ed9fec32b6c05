import { describe, expect, it } from 'vitest';
import { applySteps, diff, problemsOf, removal, type Step } from '../../lib/infra/reconcile.js';

type Want = { name: string; size: number };
type Have = { name: string; size: number; owner: string };

const rules = {
  key: (d: Want) => d.name.toLowerCase(),
  actualKey: (a: Have) => a.name.toLowerCase(),
  decide: (d: Want, a: Have | undefined): Step => {
    if (a === undefined) return { report: { kind: 'thing', name: d.name, action: 'create' }, apply: async () => void log.push(`create ${d.name}`) };
    if (a.owner !== 'me') return { report: { kind: 'thing', name: a.name, action: 'exists-unmanaged' } };
    if (a.size !== d.size) return { report: { kind: 'thing', name: a.name, action: 'update' }, apply: async () => void log.push(`update ${a.name}`) };
    return { report: { kind: 'thing', name: a.name, action: 'unchanged' } };
  },
  leftover: (a: Have): Step | undefined => (a.owner === 'me' ? { report: { kind: 'thing', name: a.name, action: 'unchanged', reason: 'no longer wanted' } } : undefined),
};
let log: string[] = [];

describe('reconcile: desired against actual, then apply', () => {
  it('gives one step per desired item in its order, matched by key, then the leftovers the rules keep', () => {
    const steps = diff(
      [{ name: 'B', size: 1 }, { name: 'a', size: 2 }, { name: 'c', size: 3 }, { name: 'd', size: 4 }],
      [{ name: 'A', size: 2, owner: 'me' }, { name: 'x', size: 0, owner: 'me' }, { name: 'C', size: 9, owner: 'me' }, { name: 'd', size: 4, owner: 'you' }, { name: 'y', size: 0, owner: 'you' }],
      rules,
    );
    expect(steps.map((s) => [s.report.name, s.report.action])).toEqual([
      ['B', 'create'],
      ['A', 'unchanged'],
      ['C', 'update'],
      ['d', 'exists-unmanaged'],
      ['x', 'unchanged'],
    ]);
  });

  it('applies updates, then creates, then deletes, each group in order; a change may amend its report', async () => {
    log = [];
    const steps: Step[] = [
      { report: { kind: 't', name: 'gone', action: 'delete' }, apply: async () => void log.push('delete gone') },
      { report: { kind: 't', name: 'new1', action: 'create' }, apply: async () => void log.push('create new1') },
      { report: { kind: 't', name: 'same', action: 'unchanged' } },
      { report: { kind: 't', name: 'mod', action: 'update' }, apply: async () => void log.push('update mod') },
      { report: { kind: 't', name: 'new2', action: 'create' } },
    ];
    steps[4]!.apply = async () => {
      log.push('create new2');
      steps[4]!.report.action = 'exists-unmanaged';
    };
    const reports = await applySteps(steps);
    expect(log).toEqual(['update mod', 'create new1', 'create new2', 'delete gone']);
    expect(reports.map((r) => `${r.name}:${r.action}`)).toEqual(['gone:delete', 'new1:create', 'same:unchanged', 'mod:update', 'new2:exists-unmanaged']);
  });

  it('runs at most `concurrency` changes at once, and fails with the first change that fails', async () => {
    let running = 0;
    let most = 0;
    const step = (name: string, fail = false): Step => ({
      report: { kind: 't', name, action: 'create' },
      apply: async () => {
        most = Math.max(most, ++running);
        await new Promise((r) => setImmediate(r));
        running--;
        if (fail) throw new Error(`${name} failed`);
      },
    });
    await applySteps(['a', 'b', 'c', 'd', 'e'].map((n) => step(n)), { concurrency: 2 });
    expect(most).toBe(2);
    await expect(applySteps([step('a'), step('b', true), step('c')])).rejects.toThrow('b failed');
  });

  it('removal decides each thing there; the problems are the blocked steps\' warnings', () => {
    const steps = removal([{ name: 'mine', full: false }, { name: 'full', full: true }, { name: 'theirs', full: false }], (a): Step | undefined =>
      a.name === 'theirs' ? undefined : a.full ? { report: { kind: 't', name: a.name, action: 'blocked', warnings: [`${a.name} holds data`] } } : { report: { kind: 't', name: a.name, action: 'delete' } },
    );
    expect(steps.map((s) => `${s.report.name}:${s.report.action}`)).toEqual(['mine:delete', 'full:blocked']);
    expect(problemsOf(steps)).toEqual(['full holds data']);
  });
});
