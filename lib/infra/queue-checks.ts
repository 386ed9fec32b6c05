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

/** The warnings a queue's settings call for: effectively-once off, or batches refused. */
export function queueWarnings(settings: { requiresDuplicateDetection?: boolean; enablePartitioning?: boolean }): string[] {
  return [duplicateDetectionWarning(settings), partitionedDuplicateWarning(settings)].filter((w): w is string => w !== undefined);
}

/** Why destroy keeps a queue, and what to do. */
export function refusal(queue: string, messages: number | undefined): string {
  const why = messages === undefined ? `cannot tell whether queue ${queue} holds messages (no connection string or namespace to read it)` : `queue ${queue} holds ${messages} message${messages === 1 ? '' : 's'} not yet received`;
  return `${why}: kept; drain it, or set force_destroy = true to delete it with its messages`;
}


/** Also the warning on a partitioned queue with duplicate detection: it takes no batches. */
export function partitionedDuplicateWarning(settings: { requiresDuplicateDetection?: boolean; enablePartitioning?: boolean }): string | undefined {
  return settings.requiresDuplicateDetection === true && settings.enablePartitioning === true
    ? 'partitioned with duplicate detection: Service Bus takes no batches on such a queue, so records are sent one per round trip (in order, keyed to the table\'s partition); far slower than batches'
    : undefined;
}

const SECOND = 1000;
const DAY = 86_400 * SECOND;

/** `PT1M`, `P14D`, `PT0.5S`, `P1DT2H` -> milliseconds; undefined when the text is not an ISO-8601 duration of days and time. */
export function durationMs(text: string): number | undefined {
  const m = /^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$/.exec(text);
  if (m === null || text === 'P' || text.endsWith('T')) return undefined;
  const [, d, h, min, s] = m;
  return ((Number(d ?? 0) * 24 + Number(h ?? 0)) * 60 + Number(min ?? 0)) * 60 * SECOND + Math.round(Number(s ?? 0) * SECOND);
}

const DURATION_SETTINGS = new Set(['lockDuration', 'defaultMessageTimeToLive', 'duplicateDetectionHistoryTimeWindow']);

/**
 * Whether a queue's reported value is the value the task asks for, as the service reports it:
 * durations in canonical form (PT60S comes back as PT1M), and a partitioned Standard queue's
 * size as 16 times the size per partition it was given.
 */
export function sameSetting(setting: string, has: unknown, want: unknown, queue: { enablePartitioning?: boolean }): boolean {
  if (has === want) return true;
  if (DURATION_SETTINGS.has(setting) && typeof has === 'string' && typeof want === 'string') {
    const a = durationMs(has);
    return a !== undefined && a === durationMs(want);
  }
  if (setting === 'maxSizeInMegabytes' && queue.enablePartitioning === true) return has === Number(want) * 16;
  return false;
}

/** Service Bus queue sizes in MB: Standard 1-5 GB, Premium also 10, 20, 40 and 80 GB. */
const SIZES = [1024, 2048, 3072, 4096, 5120, 10240, 20480, 40960, 81920];
const CONFIG_KEY: Record<string, string> = {
  maxSizeInMegabytes: 'queue_max_size_mb',
  lockDuration: 'queue_lock_duration',
  defaultMessageTimeToLive: 'queue_default_ttl',
  duplicateDetectionHistoryTimeWindow: 'queue_duplicate_detection_window',
  maxDeliveryCount: 'queue_max_delivery_count',
};

/** What Service Bus would refuse in these settings, checked before any call (one sentence per problem). */
export function settingProblems(settings: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const key = (k: string) => `${CONFIG_KEY[k] ?? k} = ${JSON.stringify(settings[k])}`;
  if (settings.maxSizeInMegabytes !== undefined && !SIZES.includes(Number(settings.maxSizeInMegabytes))) {
    problems.push(`${key('maxSizeInMegabytes')}: Service Bus takes 1024, 2048, 3072, 4096 or 5120 (Standard), or 10240, 20480, 40960, 81920 (Premium)`);
  }
  const range = (k: string, min: number, max: number, text: string) => {
    if (settings[k] === undefined) return;
    const ms = durationMs(String(settings[k]));
    if (ms === undefined) problems.push(`${key(k)}: not an ISO-8601 duration (e.g. PT1M, P14D)`);
    else if (ms < min || ms > max) problems.push(`${key(k)}: Service Bus takes ${text}`);
  };
  range('lockDuration', 5 * SECOND, 5 * 60 * SECOND, '5 seconds to 5 minutes (PT5S .. PT5M)');
  range('duplicateDetectionHistoryTimeWindow', 20 * SECOND, 7 * DAY, '20 seconds to 7 days (PT20S .. P7D)');
  range('defaultMessageTimeToLive', 1 * SECOND, 10675199 * DAY, 'at least 1 second');
  if (settings.maxDeliveryCount !== undefined && !(Number(settings.maxDeliveryCount) >= 1)) problems.push(`${key('maxDeliveryCount')}: at least 1`);
  return problems;
}
