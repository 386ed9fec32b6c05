/**
 * A provider's metrics and readiness, made available the way it was started:
 * - by an executor that asked for them (`"metrics"` in the run header): a metrics line on stdout
 *   every `interval_ms`, at once when readiness changes, and a last one when the run ends. The
 *   executor serves them with its own; a provider of one process needs no port of its own.
 * - standalone with `--metrics-port`: it serves `/metrics`, `/healthz` and `/readyz` itself.
 */
import type { Writable } from 'node:stream';
import { METRICS_TYPE, type MetricsLine } from '../protocol/messages.js';
import type { Readiness } from '../metrics/readiness.js';
import { addReadyGauge, createMetrics, type DstreamMetrics } from '../metrics/registry.js';
import { serveOps, type OpsServer } from '../metrics/server.js';

export interface Telemetry {
  readonly metrics: DstreamMetrics;
  /** Writes the last metrics line (executor) and stops; idempotent. */
  end(): Promise<void>;
  /** Stops at once, without a last line (the provider was killed). */
  dispose(): void;
}

export const DEFAULT_INTERVAL_MS = 1000;

/**
 * Metrics lines for the executor, handed to `send`: written on stdout, or (a built-in provider in
 * the executor's process) passed straight to it, so they never wait behind data held back.
 * `send` answers false once the line can no longer go out.
 *
 * `through`: the stream the lines share with data (an executable's stdout). While it holds data
 * back (the executor stopped reading: the output is stalled), no line is added behind it: it
 * would reach the executor only with that data, as old as the stall, and lines piling up would
 * grow without bound over a long stall. One line goes out when it drains, with the figures of
 * that moment.
 */
export async function reportToExecutor(send: (line: MetricsLine) => boolean, health: Readiness, intervalMs = DEFAULT_INTERVAL_MS, through?: Writable): Promise<Telemetry> {
  const metrics = await createMetrics();
  let stopped = false;
  let writing = false;
  let again = false;
  let waiting = false;
  const held = (): boolean => {
    if (through === undefined || !through.writableNeedDrain) return false;
    if (!waiting) {
      waiting = true;
      through.once('drain', () => {
        waiting = false;
        if (!stopped) void line();
      });
    }
    return true;
  };
  const line = async (last = false): Promise<void> => {
    if (writing) {
      again = true;
      return;
    }
    writing = true;
    try {
      do {
        again = false;
        if (!last && held()) return;
        const values = await metrics.registry.getMetricsAsJSON();
        if (!send({ type: METRICS_TYPE, data: { health: health.report().parts, metrics: values } })) return;
      } while (again);
    } finally {
      writing = false;
    }
  };
  const timer = setInterval(() => void line(), Math.max(1, intervalMs));
  timer.unref();
  let soon: NodeJS.Immediate | undefined;
  const onChange = () => {
    soon ??= setImmediate(() => {
      soon = undefined;
      if (!stopped) void line();
    });
  };
  health.on('change', onChange);
  const dispose = () => {
    stopped = true;
    clearInterval(timer);
    if (soon) clearImmediate(soon);
    health.off('change', onChange);
  };
  void line();
  return {
    metrics,
    dispose,
    async end() {
      if (stopped) return;
      dispose();
      // Wait for a line being written, then write the final counts (behind any data: they are the last).
      while (writing) await new Promise((r) => setImmediate(r));
      await line(true);
    },
  };
}

/** Standalone: the provider serves its own endpoints. */
export async function serveStandalone(health: Readiness, port: number, host: string | undefined, log: (message: string) => void): Promise<Telemetry> {
  const metrics = await createMetrics({ processMetrics: true });
  await addReadyGauge(metrics, () => health.report().ready);
  const server: OpsServer = await serveOps({
    port,
    ...(host !== undefined ? { host } : {}),
    metrics: async () => ({ contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }),
    readiness: () => health.report(),
  });
  log(`metrics at ${server.url}/metrics (health: /healthz, /readyz)`);
  let closed: Promise<void> | undefined;
  return {
    metrics,
    end: () => (closed ??= server.close()),
    dispose: () => void (closed ??= server.close()),
  };
}
