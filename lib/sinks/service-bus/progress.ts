/** Progress and summary lines for Service Bus delivery (stderr). */
import type { ServiceBusSinkStats } from './sink.js';

export interface Snapshot {
  at: number;
  stats: ServiceBusSinkStats[];
}

const kb = (bytes: number) => (bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(1)} KB`);

/** `Persons_cdc_events 1200 msg/s (total 5400), Orders_cdc_events idle (total 300)` */
export function progressLine(previous: Snapshot, now: Snapshot): string {
  const seconds = Math.max(0.001, (now.at - previous.at) / 1000);
  const before = new Map(previous.stats.map((s) => [s.queue, s.messages]));
  const parts = now.stats.map((s) => {
    const rate = (s.messages - (before.get(s.queue) ?? 0)) / seconds;
    return `${s.queue} ${rate > 0 ? `${Math.round(rate)} msg/s` : 'idle'} (total ${s.messages})`;
  });
  return parts.length > 0 ? `progress: ${parts.join(', ')}` : 'progress: waiting for input';
}

/** `delivered 5700 messages in 12 batches (2.1 MB, mean fill 93%) to 2 queues in 3.2 s; 4 checkpoints acknowledged: ...` */
export function summaryLine(stats: ServiceBusSinkStats[], ms: number, checkpoints: number): string {
  const messages = stats.reduce((n, s) => n + s.messages, 0);
  const batches = stats.reduce((n, s) => n + s.batches, 0);
  const bytes = stats.reduce((n, s) => n + s.bytes, 0);
  const fill = batches > 0 ? stats.reduce((n, s) => n + s.fill, 0) / batches : 0;
  const dead = stats.reduce((n, s) => n + s.deadLettered, 0);
  const perQueue = stats.map((s) => `${s.queue} ${s.messages} msg/${s.batches} batches/${kb(s.bytes)}`).join(', ');
  return (
    `delivered ${messages} messages in ${batches} batches (${kb(bytes)}, mean fill ${Math.round(fill * 100)}%) to ${stats.length} ` +
    `queue${stats.length === 1 ? '' : 's'} in ${(ms / 1000).toFixed(1)} s; ${checkpoints} checkpoint${checkpoints === 1 ? '' : 's'} acknowledged` +
    `${dead > 0 ? `; ${dead} dead-lettered` : ''}${perQueue ? `: ${perQueue}` : ''}`
  );
}
