/**
 * One client connection of the TDS test server, following MS-TDS: packets (2.2.3), PRELOGIN and
 * its encryption answer (2.2.6.5; TLS itself in tls.ts), SQL logins (2.2.6.4), SQL_BATCH and RPC
 * requests (2.2.6.6-7), result token streams (2.2.7) and the attention protocol (2.2.1.7,
 * 3.3.5.9). Rows are pulled from the backend one at a time and written under socket backpressure,
 * so a slow reader holds the server to a few packets of buffered data.
 */
import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import { ByteWriter, HEADER, PKT, STATUS_EOM, STATUS_IGNORE, cutPackets } from './bytes.js';
import { ENCRYPT, parseLogin7, parsePrelogin, preloginResponse } from './login.js';
import { parseBatch, parseRpc } from './rpc.js';
import { Running, runRequest } from './request.js';
import type { TdsServer } from './server.js';
import { TlsLayer, serverContext } from './tls.js';
import { CURCMD, DONE, ENV, TOKEN, collationChange, done, envChange, loginAck, message } from './tokens.js';
import { SqlServerError, type Param, type SessionInfo } from './types.js';

const DEFAULT_PACKET_SIZE = 4096;
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** A session as the server lists it: the backend's SessionInfo and what the login negotiated. */
export interface ServerSession extends SessionInfo {
  readonly packetSize: number;
  readonly appName: string;
}

export class Connection {
  session: ServerSession | undefined;
  private packetSize = DEFAULT_PACKET_SIZE;
  private readonly out = new ByteWriter();
  private packetId = 1;
  private inbox: Buffer[] = [];
  private message: Buffer[] = [];
  private messageBytes = 0;
  private readonly queue: { type: number; payload: Buffer; ignore: boolean }[] = [];
  private busy = false;
  private running: Running | undefined;
  private closed = false;
  private ignoring = false;
  private sentDatabase = '';
  private tls: TlsLayer | undefined;
  private frozen = false;

  constructor(
    private readonly server: TdsServer,
    readonly socket: Socket,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (chunk) => (this.tls?.takesRawBytes ? this.tls.feedRaw(chunk) : this.onData(chunk)));
    socket.on('error', () => {
      // A reset or a write to a closed peer; 'close' follows and ends the session.
    });
    socket.once('close', () => {
      this.closed = true;
      this.running?.fire('closed');
      if (this.session) {
        this.server.backend.sessionClosed?.(this.session);
        this.server.emit('sessionClosed', this.session);
      }
    });
  }

  /** Frozen: reads stop and writes are held in the socket (corked), so backpressure stops the response too. */
  setFrozen(on: boolean): void {
    if (on === this.frozen) return;
    this.frozen = on;
    if (on) {
      this.socket.pause();
      this.socket.cork();
    } else {
      this.socket.uncork();
      this.socket.resume();
    }
  }

  private onData(chunk: Buffer): void {
    if (this.ignoring) return;
    this.inbox.push(chunk);
    let buf = this.inbox.length === 1 ? this.inbox[0]! : Buffer.concat(this.inbox);
    let at = 0;
    while (buf.length - at >= HEADER) {
      if (at === 0 && this.tls === undefined && this.session === undefined && !this.busy && buf[0] === 0x16) {
        // A TLS ClientHello before PRELOGIN: TDS 8.0 (strict). Without a certificate, hang up.
        if (this.server.isSilent) return void (this.ignoring = true);
        if (this.server.certificate === undefined) return void this.socket.destroy();
        this.inbox = [];
        this.startTls('strict').feedRaw(buf);
        return;
      }
      const length = buf.readUInt16BE(at + 2);
      if (length < HEADER) return void this.socket.destroy();
      if (buf.length - at < length) break;
      this.onPacket(buf[at]!, buf[at + 1]!, buf.subarray(at + HEADER, at + length));
      at += length;
    }
    buf = buf.subarray(at);
    this.inbox = buf.length ? [buf] : [];
  }

  private onPacket(type: number, status: number, payload: Buffer): void {
    if (type === PKT.ATTENTION) return this.onAttention();
    this.message.push(Buffer.from(payload));
    this.messageBytes += payload.length;
    if (this.messageBytes > MAX_MESSAGE_BYTES) return void this.socket.destroy();
    if ((status & STATUS_EOM) === 0) return;
    const body = this.message.length === 1 ? this.message[0]! : Buffer.concat(this.message);
    this.message = [];
    this.messageBytes = 0;
    if (type === PKT.PRELOGIN && this.server.isSilent) {
      this.ignoring = true;
      return;
    }
    this.queue.push({ type, payload: body, ignore: (status & STATUS_IGNORE) !== 0 });
    if (!this.busy) void this.drainQueue();
  }

  private onAttention(): void {
    if (this.running) this.running.fire('attention');
    else {
      // Nothing is running: the response is already out, so only the acknowledgement is due.
      this.writeMessage((w) => done(w, TOKEN.DONE, DONE.ATTN, CURCMD.NONE, 0));
    }
  }

  private async drainQueue(): Promise<void> {
    this.busy = true;
    try {
      for (let m = this.queue.shift(); m && !this.closed; m = this.queue.shift()) await this.handle(m.type, m.payload, m.ignore);
    } catch (err) {
      // A message this server cannot read: a real server drops the connection.
      this.socket.destroy(err as Error);
    } finally {
      this.busy = false;
    }
  }

  private async handle(type: number, payload: Buffer, ignore: boolean): Promise<void> {
    if (ignore) return this.writeMessage((w) => done(w, TOKEN.DONE, DONE.FINAL, CURCMD.NONE, 0));
    if (this.session === undefined) {
      if (type === PKT.PRELOGIN && this.tls && !this.tls.takesRawBytes) return this.tls.feedHandshake(payload);
      if (type === PKT.PRELOGIN) return this.prelogin(payload);
      if (type === PKT.LOGIN7) return this.login(payload);
      throw new Error(`packet type 0x${type.toString(16)} before login`);
    }
    if (type === PKT.SQL_BATCH) return this.run('batch', () => ({ sql: parseBatch(payload), params: [] }));
    if (type === PKT.RPC) return this.run('rpc', () => parseRpc(payload));
    const what = type === PKT.TRANSACTION_MANAGER ? 'transaction manager requests' : `packet type 0x${type.toString(16)}`;
    return this.writeMessage((w) => {
      message(w, TOKEN.ERROR, { number: 50000, state: 1, severity: 16, message: `The TDS test server does not support ${what}.` });
      done(w, TOKEN.DONE, DONE.ERROR, CURCMD.NONE, 0);
    });
  }

  private prelogin(payload: Buffer): void {
    const { encryption } = parsePrelogin(payload);
    // Encryption when the client asks and the server has a certificate (TLS then follows inside
    // PRELOGIN packets); otherwise not supported, and everything travels in the clear.
    const handshake = this.tls === undefined && this.server.certificate !== undefined && (encryption === ENCRYPT.ON || encryption === ENCRYPT.REQ);
    const response = preloginResponse(this.tls || handshake ? ENCRYPT.ON : ENCRYPT.NOT_SUP);
    this.writeMessage((w) => w.bytes(response));
    if (handshake) this.startTls('prelogin');
  }

  private startTls(mode: 'prelogin' | 'strict'): TlsLayer {
    const tls = new TlsLayer(this.socket, serverContext(this.server.certificate!, mode === 'strict'), mode, (chunk) => this.onData(chunk));
    tls.cleartext.once('secure', () => this.server.emit('secure', { protocol: tls.cleartext.getProtocol(), alpn: tls.cleartext.alpnProtocol, mode }));
    this.tls = tls;
    return tls;
  }

  /** Where TDS packets are written: the socket, or the TLS layer over it. */
  private get transport(): Writable {
    return this.tls?.cleartext ?? this.socket;
  }

  private login(payload: Buffer): void {
    const login = parseLogin7(payload);
    const fail = (e: SqlServerError) => {
      this.writeMessage((w) => {
        message(w, TOKEN.ERROR, { number: e.number, state: e.state, severity: e.severity, message: e.message, lineNumber: e.lineNumber });
        done(w, TOKEN.DONE, DONE.ERROR, CURCMD.NONE, 0);
      });
      this.transport.end();
    };
    const loginFailed = () => new SqlServerError(18456, `Login failed for user '${login.user}'.`, 14, 1);
    if (login.integratedSecurity) return fail(new SqlServerError(18452, 'Login failed. The login is from an untrusted domain and cannot be used with Integrated authentication.', 14, 1));
    const refusal = this.server.loginRefusal;
    if (refusal) return fail(refusal === 'login failed' ? loginFailed() : refusal);
    let database: string;
    try {
      database = this.server.backend.login(login.user, login.password, login.database || undefined).database;
    } catch (err) {
      return fail(err instanceof SqlServerError ? err : loginFailed());
    }
    const size = login.packetSize === 0 ? DEFAULT_PACKET_SIZE : Math.min(32767, Math.max(512, login.packetSize));
    this.session = { id: this.server.allocateSpid(), user: login.user, database, packetSize: size, appName: login.appName };
    this.sentDatabase = database;
    this.writeMessage((w) => {
      envChange(w, ENV.DATABASE, database, 'master');
      message(w, TOKEN.INFO, { number: 5701, state: 2, severity: 0, message: `Changed database context to '${database}'.` });
      collationChange(w);
      envChange(w, ENV.LANGUAGE, 'us_english', '');
      message(w, TOKEN.INFO, { number: 5703, state: 1, severity: 0, message: 'Changed language setting to us_english.' });
      loginAck(w);
      envChange(w, ENV.PACKET_SIZE, String(size), String(DEFAULT_PACKET_SIZE));
      done(w, TOKEN.DONE, DONE.FINAL, CURCMD.NONE, 0);
    });
    this.packetSize = size;
  }

  /** A whole response in one message. */
  private writeMessage(build: (w: ByteWriter) => void): void {
    this.out.reset();
    build(this.out);
    this.send(true);
  }

  /** Writes the packets now complete in `out` (all of them, the last with EOM, when `last`). Returns false when the socket is full. */
  private send(last: boolean): boolean {
    if (this.closed) return true;
    const bytes = cutPackets(this.out, this.packetSize, this.session?.id ?? 0, () => {
      const id = this.packetId;
      this.packetId = (this.packetId + 1) & 0xff;
      return id;
    }, last);
    if (last) this.packetId = 1;
    if (bytes === undefined) return true;
    const taken = this.transport.write(bytes);
    this.server.bufferedHighWater = Math.max(this.server.bufferedHighWater, this.transport.writableLength + this.out.pos);
    return taken;
  }

  /**
   * Sends the full packets gathered so far, waits for the socket while it is full, then lets the
   * event loop turn before the next packet is built. Called as soon as a packet is full, as SQL
   * Server sends each packet of a result when it fills. The turn is what keeps a short statement
   * on another connection from waiting behind long results: a write the kernel takes at once
   * reports 'drain' on the next tick, so without it a result would be built to its end (or until
   * the socket buffer fills) before the server reads another request.
   */
  private async flush(r: Running): Promise<void> {
    const taken = this.send(false);
    if (this.closed) return;
    if (!taken) {
      let onDrain!: () => void;
      const transport = this.transport;
      const drained = new Promise<void>((resolve) => transport.once('drain', (onDrain = resolve)));
      this.server.emit('backpressure', this.session);
      await r.until(drained);
      transport.off('drain', onDrain);
      if (r.interrupted) return;
    }
    await r.until(new Promise<void>((resolve) => setImmediate(resolve)));
  }

  private noteDatabase(w: ByteWriter): void {
    const db = this.session!.database;
    if (db === this.sentDatabase) return;
    envChange(w, ENV.DATABASE, db, this.sentDatabase);
    message(w, TOKEN.INFO, { number: 5701, state: 1, severity: 0, message: `Changed database context to '${db}'.` });
    this.sentDatabase = db;
  }

  private async run(via: 'batch' | 'rpc', parse: () => { sql: string; params: Param[] }): Promise<void> {
    if (this.closed) return;
    const r = new Running();
    this.running = r;
    await runRequest({
      out: this.out,
      session: this.session!,
      backend: this.server.backend,
      stalled: this.server.stalled,
      packetPayload: this.packetSize - HEADER,
      send: (last) => this.send(last),
      flush: (running) => this.flush(running),
      noteDatabase: (w) => this.noteDatabase(w),
      writeMessage: (build) => this.writeMessage(build),
      finished: () => (this.running = undefined),
    }, r, via, parse);
  }
}
