/**
 * Which Service Bus failures are worth retrying. The SDK's own retries are turned off in dstream's
 * client so that this is the one place that decides, with backoff and jitter the user configures.
 */
import { serviceBusSdk } from './sdk.js';

/** Codes that no retry can fix: they need the user to act. */
const PERMANENT = new Set(['MessagingEntityNotFound', 'UnauthorizedAccess', 'MessagingEntityDisabled', 'MessageSizeExceeded', 'QuotaExceeded']);
/** Codes that pass with time. */
const TRANSIENT = new Set(['ServiceBusy', 'ServiceTimeout', 'ServiceCommunicationProblem', 'MessagingEntityAlreadyExists']);
const NETWORK = new Set(['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'ConnectionForcedError', 'OperationTimeoutError']);

export function isTransient(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && PERMANENT.has(code)) return false;
  if (typeof code === 'string' && (TRANSIENT.has(code) || NETWORK.has(code))) return true;
  if (serviceBusSdk().isServiceBusError(err)) return err.retryable === true || err.code === 'GeneralError';
  const name = (err as { name?: unknown } | null)?.name;
  return name === 'AbortError' ? false : typeof code === 'string' && NETWORK.has(code);
}

export interface RetryOptions {
  /** Attempts after the first. Default 8. */
  maxRetries?: number;
  /** First delay. Default 200 ms. */
  baseDelayMs?: number;
  /** Cap of one delay. Default 30 s. */
  maxDelayMs?: number;
}

/** Exponential backoff with full jitter: a random delay in [0, min(max, base * 2^attempt)]. */
export function backoffDelay(attempt: number, options: RetryOptions = {}, random: () => number = Math.random): number {
  const base = options.baseDelayMs ?? 200;
  const cap = options.maxDelayMs ?? 30_000;
  return Math.round(random() * Math.min(cap, base * 2 ** attempt));
}
