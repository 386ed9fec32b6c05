import { describe, expect, it } from 'vitest';
import { latestSaver } from '../../lib/state/latest-saver.js';

/** A save that completes when the test says: what was saved, and how many saves are running. */
function gatedSave() {
  const saved: number[] = [];
  const gates: Array<() => void> = [];
  let running = 0;
  let most = 0;
  const save = (v: number) =>
    new Promise<void>((resolve) => {
      running++;
      most = Math.max(most, running);
      gates.push(() => {
        saved.push(v);
        running--;
        resolve();
      });
    });
  return { saved, gates, save, most: () => most };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('latestSaver', () => {
  it('saves the latest of values offered while a save runs, one save at a time, never a value not offered', async () => {
    const s = gatedSave();
    const saver = latestSaver(s.save);
    saver.offer(1);
    await tick();
    for (let v = 2; v <= 5; v++) saver.offer(v);
    s.gates.shift()!();
    await tick();
    // The next save writes 5: 2, 3 and 4 were replaced while 1 was being saved.
    s.gates.shift()!();
    await saver.flush();
    expect(s.saved).toEqual([1, 5]);
    expect(s.most()).toBe(1);
  });

  it('with minIntervalMs: the first save starts at once, later ones wait, and a flush saves the latest without waiting', async () => {
    const s = gatedSave();
    // An hour: a flush that waited for it would never end within the test's timeout.
    const saver = latestSaver(s.save, { minIntervalMs: 3_600_000 });
    saver.offer(1);
    await tick();
    expect(s.gates).toHaveLength(1);
    s.gates.shift()!();
    await tick();
    saver.offer(2);
    saver.offer(3);
    await tick();
    // Within the interval: no second save yet.
    expect(s.gates).toHaveLength(0);
    const flushed = saver.flush();
    await tick();
    expect(s.gates).toHaveLength(1);
    s.gates.shift()!();
    await flushed;
    expect(s.saved).toEqual([1, 3]);
  });

  it('a failed save is thrown by the next offer and by flush', async () => {
    const saver = latestSaver(async (v: number) => {
      if (v === 2) throw new Error('disk full');
    });
    saver.offer(1);
    await saver.flush();
    saver.offer(2);
    await expect(saver.flush()).rejects.toThrow('disk full');
    expect(() => saver.offer(3)).toThrow('disk full');
  });
});
