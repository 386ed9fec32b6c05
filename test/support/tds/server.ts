/**
 * A TDS 7.4 server on node:net for tests: the real `mssql`/tedious client connects to it on
 * 127.0.0.1 and every statement goes to a TdsBackend (types.ts). This file is the listener, the
 * session list and the faults tests inject (dropConnections, refuseLogins, silent); connection.ts
 * speaks the protocol, following MS-TDS (the specification, not another implementation).
 */
import { EventEmitter } from 'node:events';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { Connection, type ServerSession } from './connection.js';
import type { Certificate } from './tls.js';
import type { SqlServerError, TdsBackend } from './types.js';

export { SqlServerError } from './types.js';

export interface ConnectionStringOptions {
  database?: string;
  user?: string;
  password?: string;
  /** Extra `Key=Value` pairs appended as given. */
  extra?: string;
}

export interface TdsServerOptions {
  backend: TdsBackend;
  /** With a certificate, the server encrypts when the client asks (Encrypt=true) and accepts TDS 8.0 strict TLS. */
  certificate?: Certificate;
  host?: string;
  port?: number;
}

export async function startTdsServer(options: TdsServerOptions): Promise<TdsServer> {
  const server = new TdsServer(options.backend, options.certificate);
  await server.listen(options.port ?? 0, options.host ?? '127.0.0.1');
  return server;
}

/**
 * Events: 'backpressure' (session) when a response waits for the client to read; 'sessionClosed'
 * (session) after the backend was told; 'secure' ({ protocol, alpn, mode }) when a TLS handshake completes.
 */
export class TdsServer extends EventEmitter {
  private readonly net: Server;
  private readonly connections = new Set<Connection>();
  private nextSpid = 51;
  port = 0;
  host = '127.0.0.1';
  /** When set, LOGIN7 is answered with this error (or 18456) instead of asking the backend. */
  loginRefusal: SqlServerError | 'login failed' | undefined;
  isSilent = false;
  isFrozen = false;
  /** Pending while requests are stalled (stallRequests); each request waits for it before the backend sees it. */
  stalled: Promise<void> | undefined;
  private releaseStalled: (() => void) | undefined;
  /** The most response bytes held in this process for one connection (socket buffer + packets being cut). */
  bufferedHighWater = 0;

  constructor(
    readonly backend: TdsBackend,
    readonly certificate?: Certificate,
  ) {
    super();
    this.net = createServer((socket) => {
      const c = new Connection(this, socket);
      this.connections.add(c);
      if (this.isFrozen) c.setFrozen(true);
      socket.once('close', () => this.connections.delete(c));
    });
  }

  async listen(port: number, host: string): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.net.once('error', reject);
      this.net.listen(port, host, () => {
        this.net.off('error', reject);
        resolve();
      });
    });
    this.port = (this.net.address() as AddressInfo).port;
    this.host = host;
  }

  connectionString(o: ConnectionStringOptions = {}): string {
    const parts = [`Server=${this.host},${this.port}`];
    if (o.database) parts.push(`Database=${o.database}`);
    parts.push(`User Id=${o.user ?? 'sa'}`, `Password=${o.password ?? 'Password1!'}`, 'Encrypt=false', 'TrustServerCertificate=true');
    return parts.join(';') + (o.extra ? `;${o.extra}` : '');
  }

  /** Logged-in sessions now open. */
  sessions(): ServerSession[] {
    return [...this.connections].flatMap((c) => (c.session ? [c.session] : []));
  }

  /** Reset every client connection now (TCP RST), in the middle of whatever it is doing. */
  dropConnections(): void {
    for (const c of this.connections) c.socket.resetAndDestroy();
  }

  /** Reset one session's connection (TCP RST); false when no open connection has that SPID. */
  dropSession(id: number): boolean {
    for (const c of this.connections) {
      if (c.session?.id !== id) continue;
      c.socket.resetAndDestroy();
      return true;
    }
    return false;
  }

  /** Answer every LOGIN7 with this error (default: 18456 login failed) until called with false. */
  refuseLogins(refuse: boolean | SqlServerError = true): void {
    this.loginRefusal = refuse === false ? undefined : refuse === true ? 'login failed' : refuse;
  }

  /** Accept TCP connections but never answer their PRELOGIN (new connections, until called with false). */
  silent(on = true): void {
    this.isSilent = on;
  }

  /**
   * Hold every request before it reaches the backend (a blocked statement, a lock wait) until called
   * with false; the client's ATTENTION (cancel, request timeout) still ends a held request. A new
   * connection's session setup batch is a request too: connect first to stall statements only.
   */
  stallRequests(on = true): void {
    if (on && this.stalled === undefined) this.stalled = new Promise<void>((resolve) => (this.releaseStalled = resolve));
    if (!on && this.releaseStalled) {
      this.releaseStalled();
      this.stalled = this.releaseStalled = undefined;
    }
  }

  /**
   * A server that freezes with its connections open: nothing is read or written on any connection,
   * new ones included, until called with false. Unlike stallRequests, not even ATTENTION is answered.
   */
  freeze(on = true): void {
    this.isFrozen = on;
    for (const c of this.connections) c.setFrozen(on);
  }

  allocateSpid(): number {
    return this.nextSpid++;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.net.close(() => resolve()));
    for (const c of this.connections) c.socket.destroy();
    await closed;
  }
}

