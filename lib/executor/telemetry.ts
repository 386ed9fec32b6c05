/**
 * `dstream run` with metrics: the executor's endpoints, its own metrics (checkpoints stored,
 * provider exits, process), and what each provider reports in its metrics lines (the last line
 * of each replaces the one before: they are cumulative). A scrape merges them into one text.
 * Readiness: each provider has handshaken, and every part a provider reports is ready.
 *
 * Why lines over the protocol rather than a port per provider: one scrape target and one probe
 * per worker, whatever the providers; built-in providers (in this process) and executables
 * report alike; no ports to allocate or secure per provider; and a provider that does not know
 * the header's `metrics` key (written for the original dstream) is simply not asked.
 */
import { Readiness } from '../metrics/readiness.js';
import { addReadyGauge, createMetrics, exposition, type DstreamMetrics, type MetricJson } from '../metrics/registry.js';
import { serveOps, type OpsServer } from '../metrics/server.js';
import type { MetricsLine } from '../protocol/messages.js';

export interface RunMetricsOptions {
  /** 0 picks a free port (see onListening). */
  port: number;
  /** Default: every interface. */
  host?: string;
  /** How often providers send their metrics line. Default 1000 ms. */
  intervalMs?: number;
  /** Called once the endpoints listen (with the port actually taken). */
  onListening?: (server: OpsServer) => void;
}

export type Side = 'input' | 'output';

export class RunTelemetry {
  readonly health = new Readiness();
  private readonly reported = new Map<Side, MetricJson[]>();

  private constructor(
    readonly metrics: DstreamMetrics,
    private readonly server: OpsServer,
    readonly intervalMs: number,
  ) {}

  static async start(options: RunMetricsOptions): Promise<RunTelemetry> {
    const metrics = await createMetrics({ processMetrics: true });
    let self: RunTelemetry | undefined;
    const server = await serveOps({
      port: options.port,
      ...(options.host !== undefined ? { host: options.host } : {}),
      metrics: () => self!.exposition(),
      readiness: () => self!.health.report(),
    });
    self = new RunTelemetry(metrics, server, options.intervalMs ?? 1000);
    const health = self.health;
    await addReadyGauge(metrics, () => health.report().ready);
    for (const side of ['input', 'output'] as const) self.health.set(side, false, 'starting');
    options.onListening?.(server);
    return self;
  }

  /** The header's `metrics` key: what a provider is asked for. */
  get ask(): { interval_ms: number } {
    return { interval_ms: this.intervalMs };
  }

  started(side: Side): void {
    this.health.set(side, true);
  }

  /** A metrics line from a provider: its metrics replace its last ones; its parts join readiness. */
  offer(side: Side, line: MetricsLine): void {
    if (Array.isArray(line.data.metrics)) this.reported.set(side, line.data.metrics as MetricJson[]);
    for (const [part, state] of Object.entries(line.data.health ?? {})) {
      if (typeof state?.ready === 'boolean') this.health.set(`${side} ${part}`, state.ready, typeof state.reason === 'string' ? state.reason : undefined);
    }
  }

  exited(side: Side, exit: { code: number | null; signal: NodeJS.Signals | null }): void {
    this.metrics.providerExits.inc({ side, code: exit.signal ?? String(exit.code) });
    this.health.set(side, false, `exited (${exit.signal ?? `exit code ${exit.code}`})`);
  }

  private async exposition(): Promise<{ contentType: string; body: string }> {
    return exposition([await this.metrics.registry.getMetricsAsJSON(), ...this.reported.values()]);
  }

  close(): Promise<void> {
    return this.server.close();
  }
}
