/**
 * A CDC reader's state as metrics and readiness: connected, leases held per table, standby,
 * recoveries, and the commits waiting in the source. Ready when connected and, in lease mode, holding a lease or standing by because
 * other workers hold them all; not ready while reconnecting or taking leases again.
 */
import type { ReaderState, SourceBacklog } from '../sources/mssql/reader.js';
import type { Readiness } from './readiness.js';
import type { DstreamMetrics } from './registry.js';

export interface SourceObserverOptions {
  metrics?: DstreamMetrics;
  health: Readiness;
  /** Provider name, the `provider` label. */
  provider: string;
  /** Lease mode: every table this worker may lease (so a lost lease shows as 0). */
  leaseTables?: string[];
  part?: string;
}

export function sourceObserver(options: SourceObserverOptions): (state: ReaderState) => void {
  const { metrics, health, provider } = options;
  const part = options.part ?? 'source';
  health.set(part, false, 'connecting');
  return (s) => {
    const labels = { provider };
    metrics?.sourceConnected.set(labels, s.connected ? 1 : 0);
    metrics?.sourceStandby.set(labels, s.standby ? 1 : 0);
    if (s.recovering !== undefined) metrics?.sourceRecoveries.inc({ provider, reason: s.recovering });
    if (s.leases !== undefined && metrics !== undefined) {
      const held = new Set(s.leases);
      for (const t of new Set([...(options.leaseTables ?? []), ...held])) metrics.leasesHeld.set({ table: t }, held.has(t) ? 1 : 0);
    }
    if (!s.connected) health.set(part, false, s.recovering === 'connection' ? 'connection lost; reconnecting' : 'connecting');
    else if (s.recovering === 'lease') health.set(part, false, 'lease session ended; taking leases again');
    else if (s.leases !== undefined && s.leases.length === 0 && !s.standby) health.set(part, false, 'holds no lease; taking leases');
    else if (s.leases !== undefined && s.leases.length === 0) health.set(part, true, 'standby: every table is leased by another worker');
    else health.set(part, true);
  };
}

/** `dstream_source_backlog_commits{provider}`, asked of the source each time the metrics are collected. */
export function sourceBacklog(metrics: DstreamMetrics | undefined, provider: string, probe: () => Promise<SourceBacklog | undefined>): void {
  if (metrics === undefined) return;
  metrics.backlogProbes.push(async () => {
    const b = await probe();
    if (b !== undefined) metrics.sourceBacklog.set({ provider }, b.commits);
  });
}
