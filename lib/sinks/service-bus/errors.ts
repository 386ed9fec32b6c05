/**
 * Which Service Bus failures are worth retrying, and when. The SDK's own retries are turned off in
 * dstream's client so that lib/retry.ts is the one loop; this file is its Service Bus judgement.
 *
 * The SDK folds what it does not know into `code: 'GeneralError'`, so the code alone says little:
 * - a connection that could not be made or broke (refused, reset, DNS, TLS) arrives as
 *   `GeneralError, retryable: false` with the system error's `syscall`/`errno` copied on and its
 *   code as the message's prefix (`ECONNREFUSED: connect ...`): transient, by that cause;
 * - an AMQP condition the SDK has no Service Bus code for (amqp:not-allowed -> InvalidOperation,
 *   Argument, ArgumentOutOfRange, InvalidField, Decode) arrives as `GeneralError, retryable: false`
 *   with the condition's name as the message's prefix: permanent, the same request fails again;
 * - throttling (`ServiceBusy`, Service Bus error 50009) names its own wait ("Please wait 2 seconds
 *   and try again"): that wait, not a short backoff.
 */
import { serviceBusSdk } from './sdk.js';
import type { RetryPolicy, Verdict } from '../../retry.js';

/** Codes that no retry can fix: they need the user to act. */
const PERMANENT = new Set(['MessagingEntityNotFound', 'UnauthorizedAccess', 'MessagingEntityDisabled', 'MessageSizeExceeded', 'QuotaExceeded']);
/** Codes that pass with time. */
const TRANSIENT = new Set(['ServiceTimeout', 'ServiceCommunicationProblem', 'MessagingEntityAlreadyExists', 'ConnectionForcedError', 'OperationTimeoutError']);
/** Socket, DNS and TLS failures: the connection, not the request, failed. */
const CONNECTION = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENETRESET',
  'ERR_TLS_HANDSHAKE_TIMEOUT',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
]);
/** The SDK's name for a throttled request. */
const THROTTLED = 'ServiceBusy';
/** Service Bus asks a throttled client to wait this long when it does not say (Standard tier: 2 s). */
export const DEFAULT_THROTTLE_WAIT_MS = 2000;

/** The system error code under `err`: its own code, the SDK's message prefix, or a cause's. */
export function connectionCause(err: unknown, depth = 0): string | undefined {
  if (typeof err !== 'object' || err === null || depth > 4) return undefined;
  const e = err as { code?: unknown; message?: unknown; syscall?: unknown; cause?: unknown; errors?: unknown };
  if (typeof e.code === 'string' && (CONNECTION.has(e.code) || e.code.startsWith('ERR_SSL_'))) return e.code;
  const prefix = typeof e.message === 'string' ? /^([A-Z][A-Z0-9_]+):/.exec(e.message)?.[1] : undefined;
  if (prefix !== undefined && (CONNECTION.has(prefix) || prefix.startsWith('ERR_SSL_'))) return prefix;
  if (Array.isArray(e.errors)) {
    for (const inner of e.errors) {
      const c = connectionCause(inner, depth + 1);
      if (c !== undefined) return c;
    }
  }
  return connectionCause(e.cause, depth + 1);
}

/** "Please wait 2 seconds and try again" -> 2000. */
export function serverDelayMs(err: unknown): number | undefined {
  const message = (err as { message?: unknown } | null)?.message;
  if (typeof message !== 'string') return undefined;
  const m = /wait\s+(\d+(?:\.\d+)?)\s*(seconds?|secs?|s|milliseconds?|ms)\b/i.exec(message);
  if (m === null) return undefined;
  const n = Number(m[1]);
  return /^m/i.test(m[2]!) ? n : n * 1000;
}

/** The retry loop's verdict on a Service Bus failure (see the file header). */
export function classify(err: unknown): Verdict {
  if ((err as { name?: unknown } | null)?.name === 'AbortError') return false;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && PERMANENT.has(code)) return false;
  if (connectionCause(err) !== undefined) return true;
  if (code === THROTTLED) return { afterMs: serverDelayMs(err) ?? DEFAULT_THROTTLE_WAIT_MS };
  if (typeof code === 'string' && TRANSIENT.has(code)) return true;
  // Everything else the SDK knows whether a retry can help: GeneralError included.
  if (serviceBusSdk().isServiceBusError(err) || (err as { name?: unknown } | null)?.name === 'MessagingError') return (err as { retryable?: unknown }).retryable === true;
  // AggregateError of connection attempts (Node's happy eyeballs): the SDK sets `retryable` on it.
  return (err as { retryable?: unknown } | null)?.retryable === true;
}

/** True when another attempt may succeed. */
export function isTransient(err: unknown): boolean {
  return classify(err) !== false;
}

/** The sink's retry settings (public name kept): attempts after the first, first delay, cap. */
export type RetryOptions = RetryPolicy;
