/**
 * TLS for the TDS test server, both ways MS-TDS allows:
 * - TDS 7.x (`Encrypt=true`): after a PRELOGIN answered with ENCRYPT_ON, the TLS handshake travels
 *   inside PRELOGIN packets, one server message per client message (MS-TDS 2.2.6.5, 3.2.5.2);
 *   after it, TLS records go straight over TCP with the TDS packets inside.
 * - TDS 8.0 (`encrypt: 'strict'`): TLS first (ALPN "tds/8.0"), then PRELOGIN inside it.
 * Node's TLS engine runs over a Duplex this class feeds and drains. The certificate is made at test
 * time by selfSignedCertificate() with the openssl command, when the machine has one.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { TLSSocket, createSecureContext, type SecureContext } from 'node:tls';
import type { Socket } from 'node:net';
import { HEADER, PKT, STATUS_EOM } from './bytes.js';

export interface Certificate {
  key: string;
  cert: string;
}

/** A self-signed certificate for 127.0.0.1 and localhost, or undefined (with why) when openssl is missing. */
export function selfSignedCertificate(): Certificate | { missing: string } {
  const dir = mkdtempSync(join(tmpdir(), 'tds-cert-'));
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    ], { stdio: 'pipe' });
    return { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') };
  } catch (err) {
    return { missing: `openssl could not make a certificate: ${(err as Error).message}` };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function serverContext(c: Certificate, strict: boolean): SecureContext {
  // TDS 7.x clients (tedious among them) cap the handshake inside PRELOGIN at TLS 1.2.
  return createSecureContext({ key: c.key, cert: c.cert, ...(strict ? {} : { maxVersion: 'TLSv1.2' as const }) });
}

export class TlsLayer {
  readonly cleartext: TLSSocket;
  private readonly records: Duplex;
  /** While true, TLS records in both directions travel as PRELOGIN packet payloads. */
  private wrapped: boolean;
  private flight: Buffer[] = [];
  private flightTimer: NodeJS.Immediate | undefined;
  private secure = false;
  /** A client flight came in and the server's answer to it has not gone out yet. */
  private answerDue = false;

  constructor(
    private readonly socket: Socket,
    context: SecureContext,
    mode: 'prelogin' | 'strict',
    onCleartext: (chunk: Buffer) => void,
  ) {
    this.wrapped = mode === 'prelogin';
    this.records = new Duplex({
      read() {},
      write: (chunk: Buffer, _encoding, callback) => {
        if (this.wrapped) {
          this.flight.push(chunk);
          this.flightTimer ??= setImmediate(() => this.sendFlight());
          return callback();
        }
        // Past the handshake: TLS records straight onto TCP, at the pace the client reads them.
        if (socket.write(chunk)) callback();
        else socket.once('drain', () => callback());
      },
      final: (callback) => {
        socket.end();
        callback();
      },
    });
    this.cleartext = new TLSSocket(this.records as unknown as Socket, {
      isServer: true,
      secureContext: context,
      ...(mode === 'strict' ? { ALPNProtocols: ['tds/8.0'] } : {}),
    });
    // The server's last flight answers the client's Finished: once it is out, records go raw.
    this.cleartext.on('secure', () => {
      this.secure = true;
      if (!this.answerDue) this.wrapped = false;
    });
    this.cleartext.on('data', onCleartext);
    this.cleartext.on('error', () => socket.destroy());
  }

  /** Bytes from TCP that are TLS records (all of them in strict mode, all after the 7.x handshake). */
  get takesRawBytes(): boolean {
    return !this.wrapped;
  }

  /** A PRELOGIN message's payload during the 7.x handshake. */
  feedHandshake(payload: Buffer): void {
    this.answerDue = true;
    this.records.push(payload);
  }

  feedRaw(chunk: Buffer): void {
    this.records.push(chunk);
  }

  /** The server's handshake flight, as one PRELOGIN message (the client waits for exactly one). */
  private sendFlight(): void {
    this.flightTimer = undefined;
    this.answerDue = false;
    const data = Buffer.concat(this.flight);
    this.flight = [];
    const header = Buffer.alloc(HEADER);
    header[0] = PKT.PRELOGIN;
    header[1] = STATUS_EOM;
    header.writeUInt16BE(HEADER + data.length, 2);
    header[6] = 1;
    this.socket.write(Buffer.concat([header, data]));
    if (this.secure) this.wrapped = false;
  }
}
