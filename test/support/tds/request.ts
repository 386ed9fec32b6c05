/**
 * One request (SQL_BATCH or RPC) of the TDS test server: its statement goes to the backend and
 * each output becomes tokens (MS-TDS 2.2.7: COLMETADATA, ROW/NBCROW, DONE/DONEINPROC/DONEPROC with
 * MORE/COUNT/ERROR, RETURNSTATUS, INFO/ERROR), rows pulled one at a time as packets leave. ATTENTION
 * (MS-TDS 2.2.1.7, 3.3.5.9) ends the response with a DONE and acknowledges it in a message of its own.
 */
import type { ByteWriter } from './bytes.js';
import { CURCMD, DONE, ResultSet, TOKEN, done, message, returnStatus } from './tokens.js';
import { SqlServerError, type BatchOutput, type ExecuteContext, type Param, type SessionInfo, type SqlValue, type TdsBackend } from './types.js';

/** What a request needs of its connection. */
export interface Wire {
  readonly out: ByteWriter;
  readonly session: SessionInfo;
  readonly backend: TdsBackend;
  /** Pending while the server holds requests (stallRequests). */
  readonly stalled: Promise<void> | undefined;
  /** Bytes of payload in one packet: a full packet is ready to go past this. */
  readonly packetPayload: number;
  /** Writes the full packets in `out` (all, the last with EOM, when `last`); false when the socket is full. */
  send(last: boolean): boolean;
  /** send(false), then waits while the socket is full (or until interrupted). */
  flush(r: Running): Promise<void>;
  /** ENVCHANGE + INFO 5701 when the backend changed the session's database. */
  noteDatabase(w: ByteWriter): void;
  writeMessage(build: (w: ByteWriter) => void): void;
  /** The backend is done with the request: ATTENTION from now on only needs an acknowledgement. */
  finished(): void;
}

export type Interrupt = 'attention' | 'closed';

/** The request being executed: aborted by ATTENTION or by the connection closing. */
export class Running {
  readonly controller = new AbortController();
  interrupted: Interrupt | undefined;
  private wake: ((why: Interrupt) => void) | undefined;

  fire(why: Interrupt): void {
    this.interrupted ??= why;
    this.controller.abort(new Error(why === 'attention' ? 'attention' : 'connection closed'));
    this.wake?.(why);
  }

  /**
   * `p`, or the interruption if it comes first. One promise per wait: racing every row against one
   * long-lived promise would pile a reaction onto it per row for the whole result.
   */
  until<T>(p: Promise<T>): Promise<T | Interrupt> {
    if (this.interrupted) return Promise.resolve(this.interrupted);
    return new Promise<T | Interrupt>((resolve, reject) => {
      this.wake = resolve;
      p.then(resolve, reject);
    });
  }
}

/**
 * Runs one request: each backend output becomes tokens, a statement's DONE held back until the next
 * output shows whether MORE is due; ends with the final DONE (batch) or RETURNSTATUS + DONEPROC (RPC).
 */
export async function runRequest(wire: Wire, r: Running, via: 'batch' | 'rpc', parse: () => { sql: string; params: Param[] }): Promise<void> {
  const w = wire.out;
  w.reset();
  const statementDone = via === 'rpc' ? TOKEN.DONEINPROC : TOKEN.DONE;
  let pending: { status: number; curCmd: number; rowCount: number } | undefined;
  const writePending = (more: boolean) => {
    if (pending) done(w, statementDone, pending.status | (more ? DONE.MORE : 0), pending.curCmd, pending.rowCount);
    pending = undefined;
  };
  let returned = false;
  let failed: SqlServerError | undefined;
  const ctx: ExecuteContext = { session: wire.session, signal: r.controller.signal, via };
  let iterator: AsyncIterator<BatchOutput> | undefined;
  try {
    if (wire.stalled) await r.until(wire.stalled);
    const { sql, params } = parse();
    // A request cancelled while stalled never reaches the backend.
    if (!r.interrupted) iterator = wire.backend.execute(sql, params, ctx)[Symbol.asyncIterator]();
    while (iterator) {
      const step = await r.until(iterator.next());
      if (typeof step === 'string' || step.done) break;
      const output = step.value;
      writePending(true);
      wire.noteDatabase(w);
      if ('columns' in output) {
        const rs = new ResultSet(output.columns);
        rs.writeMetadata(w);
        const rowCount = await writeRows(wire, r, rs, output.rows);
        pending = { status: DONE.COUNT, curCmd: CURCMD.SELECT, rowCount };
      } else if ('rowCount' in output) {
        pending = { status: DONE.COUNT, curCmd: CURCMD.NONE, rowCount: output.rowCount };
      } else if ('returnStatus' in output) {
        returnStatus(w, output.returnStatus);
        returned = true;
      } else if ('info' in output) {
        message(w, TOKEN.INFO, { number: output.info.number, state: 1, severity: output.info.severity ?? 0, message: output.info.message });
      }
      if (r.interrupted) break;
      if (w.pos >= wire.packetPayload) await wire.flush(r);
      if (r.interrupted) break;
    }
  } catch (err) {
    failed = err instanceof SqlServerError
      ? err
      : new SqlServerError(50000, `TDS test server backend failed: ${err instanceof Error ? err.message : String(err)}`, 16, 1);
  } finally {
    wire.finished();
  }
  if (r.interrupted) {
    // Stop the backend's work; it sees ctx.signal aborted too.
    iterator?.return?.().catch(() => undefined);
    if (r.interrupted === 'closed') return;
    // End the cancelled response, then acknowledge the attention in a message of its own.
    done(w, TOKEN.DONE, DONE.FINAL, CURCMD.NONE, 0);
    wire.send(true);
    return wire.writeMessage((aw) => done(aw, TOKEN.DONE, DONE.ATTN, CURCMD.NONE, 0));
  }
  wire.noteDatabase(w);
  const finalToken = via === 'rpc' ? TOKEN.DONEPROC : TOKEN.DONE;
  if (failed) {
    writePending(true);
    message(w, TOKEN.ERROR, { number: failed.number, state: failed.state, severity: failed.severity, message: failed.message, lineNumber: failed.lineNumber });
    done(w, finalToken, DONE.ERROR, CURCMD.NONE, 0);
  } else if (via === 'rpc') {
    writePending(true);
    if (!returned) returnStatus(w, 0);
    done(w, TOKEN.DONEPROC, DONE.FINAL, CURCMD.EXECUTE, 0);
  } else if (pending) writePending(false);
  else done(w, TOKEN.DONE, DONE.FINAL, CURCMD.NONE, 0);
  wire.send(true);
}

/** ROW/NBCROW tokens for each row, pulled one at a time; returns how many were written. */
async function writeRows(wire: Wire, r: Running, rs: ResultSet, rows: Iterable<SqlValue[]> | AsyncIterable<SqlValue[]>): Promise<number> {
  const w = wire.out;
  let count = 0;
  if (Symbol.iterator in rows) {
    for (const row of rows) {
      rs.writeRow(w, row);
      count++;
      if (w.pos >= wire.packetPayload) await wire.flush(r);
      if (r.interrupted) break;
    }
    return count;
  }
  const it = rows[Symbol.asyncIterator]();
  try {
    for (;;) {
      const step = await r.until(it.next());
      if (typeof step === 'string' || step.done) break;
      rs.writeRow(w, step.value);
      count++;
      if (w.pos >= wire.packetPayload) await wire.flush(r);
      if (r.interrupted) break;
    }
  } finally {
    if (r.interrupted) it.return?.().catch(() => undefined);
  }
  return count;
}
