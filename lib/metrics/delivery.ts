/**
 * Delivery metrics of a sink: rows and bytes per table and destination, batch fill, send latency,
 * retries by kind, the backlog and how far behind the source it is, and the sink's readiness.
 * The sink reports what happens through `SinkObserver` (it knows nothing of Prometheus); this
 * turns those reports into metrics.
 */
import type { SinkObserver } from '../sinks/service-bus/sink.js';
import type { DstreamMetrics } from './registry.js';
import type { Readiness } from './readiness.js';

/** Records received and not yet accepted, oldest first, per destination. */
class Pending {
  tables: string[] = [];
  commits: number[] = [];
  bytes: number[] = [];
  head = 0;

  get size(): number {
    return this.tables.length - this.head;
  }

  push(table: string, commitMs: number, bytes: number): void {
    this.tables.push(table);
    this.commits.push(commitMs);
    this.bytes.push(bytes);
  }

  /** Takes the oldest `n`, calling `each` for each. */
  take(n: number, each: (table: string, commitMs: number, bytes: number) => void): void {
    const end = Math.min(this.head + n, this.tables.length);
    for (let i = this.head; i < end; i++) each(this.tables[i]!, this.commits[i]!, this.bytes[i]!);
    this.head = end;
    // Compacted once the taken part dominates, so memory follows the backlog, not the run.
    if (this.head > 1024 && this.head * 2 > this.tables.length) {
      this.tables = this.tables.slice(this.head);
      this.commits = this.commits.slice(this.head);
      this.bytes = this.bytes.slice(this.head);
      this.head = 0;
    }
  }

  oldestCommit(): number {
    return this.size > 0 ? this.commits[this.head]! : NaN;
  }
}

export interface DeliveryObserverOptions {
  metrics?: DstreamMetrics;
  health?: Readiness;
  /** Readiness part name. Default `sink`. */
  part?: string;
  now?: () => number;
}

/** A SinkObserver that keeps metrics and readiness; pass it as `observer` to the sinks of one output. */
export function deliveryObserver(options: DeliveryObserverOptions): SinkObserver {
  const { metrics, health } = options;
  const part = options.part ?? 'sink';
  const now = options.now ?? Date.now;
  const pending = new Map<string, Pending>();
  const failing = new Map<string, string>();
  const pendingOf = (queue: string) => {
    let p = pending.get(queue);
    if (p === undefined) pending.set(queue, (p = new Pending()));
    return p;
  };
  const updateHealth = () => {
    if (health === undefined) return;
    if (failing.size === 0) health.set(part, true);
    else health.set(part, false, [...failing].map(([q, why]) => `${q}: ${why}`).join('; '));
  };
  health?.set(part, true);
  metrics?.beforeCollect.push(() => {
    const t = now();
    for (const [queue, p] of pending) {
      const oldest = p.oldestCommit();
      metrics.secondsBehind.set({ destination: queue }, Number.isNaN(oldest) ? 0 : Math.max(0, (t - oldest) / 1000));
      metrics.pendingRows.set({ destination: queue }, p.size);
    }
  });
  return {
    received(queue, table, commitTime, bytes) {
      if (metrics === undefined) return;
      const ms = commitTime === undefined ? NaN : Date.parse(commitTime);
      pendingOf(queue).push(table, ms, bytes);
    },
    delivered(queue, info) {
      if (failing.delete(queue)) updateHealth();
      if (metrics === undefined) return;
      const byTable = new Map<string, { rows: number; bytes: number; commit: number }>();
      const t0 = now();
      const latency = metrics.deliveryLatency.labels(queue);
      pendingOf(queue).take(info.records, (table, commit, bytes) => {
        if (!Number.isNaN(commit)) latency.observe(Math.max(0, (t0 - commit) / 1000));
        const t = byTable.get(table);
        if (t === undefined) byTable.set(table, { rows: 1, bytes, commit });
        else {
          t.rows++;
          t.bytes += bytes;
          if (!Number.isNaN(commit)) t.commit = commit;
        }
      });
      for (const [table, t] of byTable) {
        const labels = { table, destination: queue };
        metrics.rowsDelivered.inc(labels, t.rows);
        metrics.bytesDelivered.inc(labels, t.bytes);
        if (!Number.isNaN(t.commit)) metrics.lastDeliveredCommit.set(labels, t.commit / 1000);
      }
      if (info.fill !== undefined) {
        metrics.batchesSent.inc({ destination: queue });
        metrics.batchFill.observe({ destination: queue }, info.fill);
      }
    },
    sent(queue, seconds) {
      metrics?.sendSeconds.observe({ destination: queue }, seconds);
    },
    retried(queue, kind) {
      metrics?.retries.inc({ component: 'service-bus', kind });
      failing.set(queue, `sends failing (${kind}), retrying`);
      updateHealth();
    },
    setAside() {
      metrics?.invalidRecords.inc({ stage: 'asb-sink', policy: 'dead-letter' });
    },
  };
}
