/**
 * The operator's endpoints on node:http: `/metrics` (Prometheus text), `/healthz` (the process
 * and its event loop answer) and `/readyz` (every part ready; the reasons in the body otherwise).
 * Kubernetes probes and Prometheus reach it on the pod's address, so by default it listens on
 * every interface; `host` narrows it (127.0.0.1 for a machine-local scraper).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DstreamError, ErrorCodes, messageOf } from '../errors.js';
import { readinessText, type ReadinessReport } from './readiness.js';

export interface OpsServerOptions {
  /** 0 picks a free port (see `port` on the result). */
  port: number;
  /** Default: every interface (`::`, which also takes IPv4 where the system allows). */
  host?: string;
  /** The Prometheus text of the moment. */
  metrics: () => Promise<{ contentType: string; body: string }>;
  readiness: () => ReadinessReport;
}

export interface OpsServer {
  readonly port: number;
  readonly host: string;
  /** `http://host:port` as a scraper would write it. */
  readonly url: string;
  close(): Promise<void>;
}

export async function serveOps(options: OpsServerOptions): Promise<OpsServer> {
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
    throw new DstreamError(ErrorCodes.CONFIG, `metrics port must be an integer from 0 to 65535; got ${JSON.stringify(options.port)}`);
  }
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz') {
      // Answering at all proves the event loop turns; nothing else is asked of liveness, so a
      // slow source or a broker outage never gets the process restarted.
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end('ok\n');
      return;
    }
    if (path === '/readyz') {
      const r = options.readiness();
      res.writeHead(r.ready ? 200 : 503, { 'content-type': 'text/plain; charset=utf-8' }).end(readinessText(r));
      return;
    }
    if (path === '/metrics') {
      options.metrics().then(
        ({ contentType, body }) => res.writeHead(200, { 'content-type': contentType }).end(body),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`could not collect metrics: ${messageOf(err)}\n`),
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found; try /metrics, /healthz or /readyz\n');
  });
  // A scrape must never hold the process open at its end.
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new DstreamError(
          ErrorCodes.CONFIG,
          err.code === 'EADDRINUSE'
            ? `metrics port ${options.port} is in use; pick another with --metrics-port (or metrics { port = N })`
            : `could not listen for metrics on ${options.host ?? '*'}:${options.port}: ${err.message}`,
          { cause: err },
        ),
      ),
    );
    server.listen({ port: options.port, ...(options.host !== undefined ? { host: options.host } : {}) }, () => resolve());
  });
  server.unref();
  const address = server.address() as AddressInfo;
  const shown = options.host ?? 'localhost';
  return {
    port: address.port,
    host: options.host ?? address.address,
    url: `http://${shown.includes(':') ? `[${shown}]` : shown}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
