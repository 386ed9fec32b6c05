/**
 * The one retry loop of dstream: Service Bus sends, queue management, the SQL checkpoint store and
 * the CDC reader's connections all go through `retry()`. Each caller says which failures pass with
 * time (`classify`); the loop owns the backoff (exponential, full jitter), the server's own delay
 * when it gives one (throttling: "wait 2 seconds"), the count of attempts, and cancellation: every
 * wait is abortable through `signal`, so a stream destroyed mid-backoff lets the process exit at
 * once instead of sleeping out its delay.
 */

/** What one failure means: give up, try again after the backoff, or after at least `afterMs`. */
export type Verdict = boolean | { afterMs: number };

export interface Backoff {
  /** Attempts in all, the first included. Default 9 (8 retries). */
  maxAttempts?: number;
  /** Ceiling of the first delay. Default 200 ms. */
  baseMs?: number;
  /** Ceiling of any one delay. Default 30 s. */
  maxMs?: number;
}

export interface RetryInfo {
  /** The attempt that failed, 1-based. */
  attempt: number;
  maxAttempts: number;
  delayMs: number;
  error: unknown;
}

export interface RetryCallOptions extends Backoff {
  /** Whether (and when) a failure is worth another attempt; `attempt` is the one that failed. */
  classify: (err: unknown, attempt: number) => Verdict;
  /** Aborts the wait between attempts (and is handed to `op`). */
  signal?: AbortSignal;
  /** Called before each wait, for logs and counters. */
  onRetry?: (info: RetryInfo) => void;
  /** Turns the last failure into the error thrown; it knows how many attempts were made. */
  fail?: (err: unknown, attempts: number, info: { maxAttempts: number; retryable: boolean }) => unknown;
  /** For tests: the source of jitter. */
  random?: () => number;
}

/** The retry settings users give (sink options, config): retries after the first attempt. */
export interface RetryPolicy {
  /** Attempts after the first. */
  maxRetries?: number;
  /** Ceiling of the first delay. Default 200 ms. */
  baseDelayMs?: number;
  /** Ceiling of any one delay. Default 30 s. */
  maxDelayMs?: number;
}

/** A user's policy as the loop's backoff; `defaultRetries` when the policy names none. */
export function backoffOf(policy: RetryPolicy = {}, defaultRetries = 8): Backoff {
  return { maxAttempts: (policy.maxRetries ?? defaultRetries) + 1, baseMs: policy.baseDelayMs, maxMs: policy.maxDelayMs };
}

/** Exponential backoff with full jitter: a random delay in [0, min(max, base * 2^(attempt-1))]. */
export function backoffDelay(attempt: number, backoff: Backoff = {}, random: () => number = Math.random): number {
  const base = backoff.baseMs ?? 200;
  const cap = backoff.maxMs ?? 30_000;
  return Math.round(random() * Math.min(cap, base * 2 ** Math.max(0, attempt - 1)));
}

/** The delay before the next attempt: the server's wait when it named one (plus a little jitter), else the backoff. */
export function delayFor(verdict: Verdict, attempt: number, backoff: Backoff = {}, random: () => number = Math.random): number {
  if (typeof verdict === 'object') return verdict.afterMs + Math.round(random() * Math.min(verdict.afterMs / 10, 1000));
  return backoffDelay(attempt, backoff, random);
}

/** Runs `op` until it succeeds, a failure is classified permanent, attempts run out, or `signal` aborts. */
export async function retry<T>(op: (attempt: number, signal?: AbortSignal) => Promise<T>, options: RetryCallOptions): Promise<T> {
  const maxAttempts = Math.max(1, options.maxAttempts ?? 9);
  const random = options.random ?? Math.random;
  for (let attempt = 1; ; attempt++) {
    options.signal?.throwIfAborted();
    let err: unknown;
    try {
      return await op(attempt, options.signal);
    } catch (e) {
      err = e;
    }
    // A failure caused by the abort itself is the abort, not something to classify.
    options.signal?.throwIfAborted();
    const verdict = options.classify(err, attempt);
    if (verdict === false || attempt >= maxAttempts) {
      throw options.fail ? options.fail(err, attempt, { maxAttempts, retryable: verdict !== false }) : err;
    }
    const delayMs = delayFor(verdict, attempt, options, random);
    options.onRetry?.({ attempt, maxAttempts, delayMs, error: err });
    await sleep(delayMs, options.signal);
  }
}

/** setTimeout as a promise that an AbortSignal cuts short (rejecting with the signal's reason). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** "after 9 attempts" / "on attempt 3 of 9 (not retryable)": what a message says about the tries made. */
export function attemptsText(attempts: number, info: { maxAttempts: number; retryable: boolean }): string {
  if (info.retryable) return `after ${attempts} attempt${attempts === 1 ? '' : 's'}`;
  return attempts === 1 ? '' : `on attempt ${attempts} of ${info.maxAttempts}`;
}
