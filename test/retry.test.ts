import { describe, expect, it } from 'vitest';
import { attemptsText, backoffDelay, retry } from '../lib/retry.js';

describe('retry()', () => {
  it('tries again what classify calls transient, up to maxAttempts, and says how many attempts were made', async () => {
    let calls = 0;
    const err = await retry(
      async () => {
        calls++;
        throw new Error('busy');
      },
      { maxAttempts: 4, baseMs: 1, maxMs: 2, classify: () => true, fail: (e, n, info) => new Error(`${(e as Error).message} ${attemptsText(n, info)}`) },
    ).catch((e: Error) => e);
    expect(calls).toBe(4);
    expect(err.message).toBe('busy after 4 attempts');
  });

  it('stops at the first failure classify calls permanent', async () => {
    let calls = 0;
    const err = await retry(
      async (attempt) => {
        calls++;
        throw new Error(attempt === 1 ? 'transient' : 'permanent');
      },
      { maxAttempts: 9, baseMs: 1, classify: (e) => (e as Error).message === 'transient', fail: (e, n, info) => new Error(`${(e as Error).message} ${attemptsText(n, info)}`) },
    ).catch((e: Error) => e);
    expect(calls).toBe(2);
    expect(err.message).toBe('permanent on attempt 2 of 9');
  });

  it('waits at least the delay the server asked for', async () => {
    const delays: number[] = [];
    let calls = 0;
    await retry(
      async () => {
        if (++calls === 1) throw new Error('throttled');
        return 'ok';
      },
      { baseMs: 1, maxMs: 1, classify: () => ({ afterMs: 50 }), onRetry: (i) => delays.push(i.delayMs) },
    );
    expect(delays[0]).toBeGreaterThanOrEqual(50);
  });

  it('an abort cuts the wait short and rejects with the abort reason', async () => {
    const ac = new AbortController();
    const reason = new Error('destroyed');
    const running = retry(
      async () => {
        throw new Error('down');
      },
      { baseMs: 600_000, maxMs: 600_000, random: () => 1, classify: () => true, signal: ac.signal, onRetry: () => ac.abort(reason) },
    );
    await expect(running).rejects.toBe(reason);
  });

  it('backoff is jittered under an exponential ceiling', () => {
    expect(backoffDelay(1, { baseMs: 100 }, () => 1)).toBe(100);
    expect(backoffDelay(4, { baseMs: 100 }, () => 1)).toBe(800);
    expect(backoffDelay(20, { baseMs: 100, maxMs: 1000 }, () => 1)).toBe(1000);
    expect(backoffDelay(3, { baseMs: 100 }, () => 0)).toBe(0);
  });
});
