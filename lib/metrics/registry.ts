/**
 * dstream's Prometheus metrics: every family in one place (docs/operations.md lists the same),
 * on a registry of its own per run or provider (never prom-client's global one), so a library
 * user or a test can run several. prom-client loads on the first call: a run without metrics,
 * and `import('dstream')`, do not pay for it.
 */
import type * as Prom from 'prom-client';

export type PromClient = typeof Prom;

let loading: Promise<PromClient> | undefined;

/** prom-client, loaded once, on first use. */
export function promClient(): Promise<PromClient> {
  loading ??= import('prom-client').then((m) => ((m as unknown as { default?: PromClient }).default ?? m) as PromClient);
  return loading;
}

/** Seconds, for send latencies: 1 ms to 60 s. */
const SEND_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/**
 * Seconds from commit to delivery, up to 10 min: 50 ms apart from 0.25 to 1 s, around the default
 * target (poll 500 ms + linger 20 ms + 250 ms), and no more than about 12 % apart up to 5 s, so
 * histogram_quantile's interpolation within a bucket (it takes rows as spread evenly over it)
 * moves a p99 by little wherever a loaded machine puts it.
 */
const LATENCY_BUCKETS = [
  0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2,
  2.25, 2.5, 2.75, 3, 3.25, 3.5, 3.75, 4, 4.5, 5, 6, 7.5, 10, 15, 20, 30, 60, 120, 300, 600,
];
/** Fractions of the largest batch the destination takes. */
const FILL_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1];

export interface DstreamMetrics {
  readonly registry: Prom.Registry;
  readonly rowsRead: Prom.Counter<'table'>;
  readonly rowsDelivered: Prom.Counter<'table' | 'destination'>;
  readonly bytesDelivered: Prom.Counter<'table' | 'destination'>;
  readonly batchesSent: Prom.Counter<'destination'>;
  readonly batchFill: Prom.Histogram<'destination'>;
  readonly sendSeconds: Prom.Histogram<'destination'>;
  readonly deliveryLatency: Prom.Histogram<'destination'>;
  readonly retries: Prom.Counter<'component' | 'kind'>;
  readonly invalidRecords: Prom.Counter<'stage' | 'policy'>;
  readonly checkpointsAcknowledged: Prom.Counter<'provider'>;
  readonly checkpointsStored: Prom.Counter<'task'>;
  readonly lastDeliveredCommit: Prom.Gauge<'table' | 'destination'>;
  readonly secondsBehind: Prom.Gauge<'destination'>;
  readonly pendingRows: Prom.Gauge<'destination'>;
  readonly leasesHeld: Prom.Gauge<'table'>;
  readonly sourceConnected: Prom.Gauge<'provider'>;
  readonly sourceStandby: Prom.Gauge<'provider'>;
  readonly sourceRecoveries: Prom.Counter<'provider' | 'reason'>;
  readonly sourceBacklog: Prom.Gauge<'provider'>;
  readonly providerExits: Prom.Counter<'side' | 'code'>;
  /** Run before each collection: gauges that are computed from state (seconds behind). */
  readonly beforeCollect: Array<() => void>;
  /** Run when `sourceBacklog` is collected: each source sets its value (it may ask the source). */
  readonly backlogProbes: Array<() => Promise<void>>;
}

export interface CreateMetricsOptions {
  /** Also Node's process metrics (CPU, memory, event loop lag): for the process that serves them. */
  processMetrics?: boolean;
}

export async function createMetrics(options: CreateMetricsOptions = {}): Promise<DstreamMetrics> {
  const prom = await promClient();
  const registry = new prom.Registry();
  const registers = [registry];
  const beforeCollect: Array<() => void> = [];
  const backlogProbes: Array<() => Promise<void>> = [];
  const counter = <L extends string>(name: string, help: string, labelNames: L[]) => new prom.Counter<L>({ name, help, labelNames, registers });
  const gauge = <L extends string>(name: string, help: string, labelNames: L[], collect?: () => void | Promise<void>) =>
    new prom.Gauge<L>({ name, help, labelNames, registers, ...(collect ? { collect } : {}) });
  const histogram = <L extends string>(name: string, help: string, labelNames: L[], buckets: number[]) => new prom.Histogram<L>({ name, help, labelNames, buckets, registers });
  const runCollectors = () => {
    for (const c of beforeCollect) c();
  };
  const m: DstreamMetrics = {
    registry,
    beforeCollect,
    backlogProbes,
    rowsRead: counter('dstream_rows_read_total', 'Change rows read from the source (checkpoint markers not counted)', ['table']),
    rowsDelivered: counter('dstream_rows_delivered_total', 'Rows the destination accepted (Service Bus answered the send)', ['table', 'destination']),
    bytesDelivered: counter('dstream_bytes_delivered_total', 'Bytes of the messages the destination accepted, as encoded for the wire', ['table', 'destination']),
    batchesSent: counter('dstream_batches_sent_total', 'Batches the destination accepted', ['destination']),
    batchFill: histogram('dstream_batch_fill_ratio', 'Size of each batch sent as a fraction of the largest the destination takes', ['destination'], FILL_BUCKETS),
    sendSeconds: histogram('dstream_send_duration_seconds', 'Time Service Bus took to accept one send (a batch or a message), successful attempts only', ['destination'], SEND_BUCKETS),
    deliveryLatency: histogram('dstream_delivery_latency_seconds', 'From the source commit (metadata.CommitTime) to the destination accepting the row, per row', ['destination'], LATENCY_BUCKETS),
    retries: counter('dstream_retries_total', 'Attempts that failed and were retried, by component and kind (throttled, timeout, connection, other)', ['component', 'kind']),
    invalidRecords: counter('dstream_invalid_records_total', 'Records set aside or skipped under an invalid-record policy, by stage and policy', ['stage', 'policy']),
    checkpointsAcknowledged: counter('dstream_checkpoints_acknowledged_total', 'Checkpoints the output acknowledged (everything before them durable)', ['provider']),
    checkpointsStored: counter('dstream_checkpoints_stored_total', 'Acknowledged checkpoints the executor stored in the state store', ['task']),
    lastDeliveredCommit: gauge('dstream_last_delivered_commit_timestamp_seconds', 'Source commit time of the last change the destination accepted (Unix seconds)', ['table', 'destination']),
    secondsBehind: gauge('dstream_seconds_behind_source', 'Age of the oldest change received and not yet accepted by the destination (now - its commit time); 0 when everything received is delivered', ['destination'], runCollectors),
    pendingRows: gauge('dstream_pending_rows', 'Rows received by the sink and not yet accepted by the destination (the delivery backlog)', ['destination']),
    leasesHeld: gauge('dstream_leases_held', '1 for each table whose lease this worker holds (lease mode), 0 when it lost or released it', ['table']),
    sourceConnected: gauge('dstream_source_connected', '1 while the source is connected, 0 while it reconnects', ['provider']),
    sourceStandby: gauge('dstream_source_standby', '1 while this worker holds no lease because others hold them all (a ready standby)', ['provider']),
    sourceRecoveries: counter('dstream_source_recoveries_total', 'Times the source went back to its last checkpoint and read on: connection lost, lease lost, ...', ['provider', 'reason']),
    sourceBacklog: gauge(
      'dstream_source_backlog_commits',
      'Commits in the source after the position being read, up to its newest (mssql-cdc: cdc.lsn_time_mapping rows up to the max LSN), counted up to max_transactions',
      ['provider'],
      async () => {
        await Promise.all(backlogProbes.map((p) => p()));
      },
    ),
    providerExits: counter('dstream_provider_exits_total', 'Providers of a run that exited, by side and exit code (dstream does not restart them: the run ends)', ['side', 'code']),
  };
  if (options.processMetrics) prom.collectDefaultMetrics({ register: registry });
  return m;
}

/**
 * `dstream_ready` (1 or 0, what `/readyz` says) on the registry of the process that serves the
 * endpoints; not on providers' registries, whose readiness reaches it by other means.
 */
export async function addReadyGauge(metrics: DstreamMetrics, ready: () => boolean): Promise<void> {
  const prom = await promClient();
  new prom.Gauge({
    name: 'dstream_ready',
    help: '1 when /readyz answers ready, else 0',
    registers: [metrics.registry],
    collect() {
      this.set(ready() ? 1 : 0);
    },
  });
}

/** One metric as prom-client's JSON (what providers send the executor). */
export type MetricJson = Awaited<ReturnType<Prom.Registry['getMetricsAsJSON']>>[number];

/**
 * Several registries' metrics (this process's and each provider's last snapshot) as one
 * Prometheus text exposition: series of the same name and labels are summed.
 */
export async function exposition(parts: MetricJson[][]): Promise<{ contentType: string; body: string }> {
  const prom = await promClient();
  const merged = prom.AggregatorRegistry.aggregate(parts);
  return { contentType: merged.contentType, body: await merged.metrics() };
}
