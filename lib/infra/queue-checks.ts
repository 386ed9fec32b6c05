/**
 * What dstream checks about queues against what Service Bus accepts and promises, shared by both
 * engines and the sink: the warnings that effectively-once needs, and why destroy keeps a queue.
 */

/** A queue without duplicate detection accepts every replay: effectively-once does not hold there. */
export function duplicateDetectionWarning(settings: { requiresDuplicateDetection?: boolean }): string | undefined {
  return settings.requiresDuplicateDetection === true
    ? undefined
    : 'duplicate detection is off on this queue: records sent again after a failure arrive twice (delivery is at-least-once, not effectively-once)';
}

/** Why destroy keeps a queue, and what to do. */
export function refusal(queue: string, messages: number | undefined): string {
  const why = messages === undefined ? `cannot tell whether queue ${queue} holds messages (no connection string or namespace to read it)` : `queue ${queue} holds ${messages} message${messages === 1 ? '' : 's'} not yet received`;
  return `${why}: kept; drain it, or set force_destroy = true to delete it with its messages`;
}

