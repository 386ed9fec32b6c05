/**
 * One conversation with a provider: send the command header, wait for the handshake (with a
 * timeout, noticing a crash before it), and hand back what follows as parsed lines. A first line
 * that is not a handshake comes from an older provider: it is data, and goes first.
 */
import { decodeEnvelopes } from '../envelope/decode.js';
import { Writable } from 'node:stream';
import type { InvalidRecord } from '../envelope/invalid.js';
import { DstreamError, ErrorCodes, isDstreamError } from '../errors.js';
import { readHandshake, type CommandHeader } from '../protocol/messages.js';
import type { ProviderHandle } from './provider-handle.js';

export interface Session {
  handle: ProviderHandle;
  /** Every line after the handshake (or from the first line, for an older provider). */
  lines: AsyncIterator<unknown>;
  /** No handshake: its first line was data (or, with `silenceIsOriginal`, nothing came). */
  legacy: boolean;
  /** Its handshake declared dstream's protocol (`"protocol": n`); originals never do. */
  dstream: boolean;
  /** With `silenceIsOriginal`: nothing came before the timeout. */
  silent?: boolean;
}

export function providerFailed(handle: ProviderHandle, what: string, exit?: { code: number | null; signal: NodeJS.Signals | null }): DstreamError {
  const how = exit === undefined ? '' : exit.signal ? ` (killed by ${exit.signal})` : ` (exit code ${exit.code})`;
  const tail = handle.stderrTail().trim();
  return new DstreamError(ErrorCodes.PROVIDER, `${handle.label}: ${what}${how}${tail ? `\n--- last lines of its stderr ---\n${tail}` : ''}`, {
    details: { provider: handle.label, ...exit },
  });
}

export interface SessionOptions {
  handshakeTimeoutMs?: number;
  /** End the provider's stdin after the header. */
  endInput?: boolean;
  /**
   * No line before the timeout means a provider of the original dstream that waits for the end of
   * its input before it starts (the Go MSSQL ingester reads all of stdin): a legacy session, not an error.
   */
  silenceIsOriginal?: boolean;
  /**
   * Lines that are not JSON go here instead of failing the session (an output that prints what it
   * writes, as the original .NET console output does). Without it, such a line is an error that
   * names the provider.
   */
  onStrayLine?: (line: string) => void;
}

export async function openSession(handle: ProviderHandle, header: CommandHeader, options: SessionOptions = {}): Promise<Session> {
  handle.stdin.write(`${JSON.stringify(header)}\n`);
  if (options.endInput) handle.stdin.end();
  const stray = options.onStrayLine;
  const values = handle.stdout.pipe(
    decodeEnvelopes({
      raw: true,
      maxLineBytes: 64 * 1024 * 1024,
      ...(stray === undefined
        ? {}
        : {
            onInvalid: 'dead-letter' as const,
            deadLetter: new Writable({
              write(chunk: Buffer, _enc, done) {
                stray((JSON.parse(chunk.toString()) as InvalidRecord).raw);
                done();
              },
            }),
          }),
    }),
  );
  const it = named(handle, values[Symbol.asyncIterator]());
  const timeoutMs = options.handshakeTimeoutMs ?? 30_000;
  let timer: NodeJS.Timeout | undefined;
  const first = await Promise.race([
    it.next(),
    handle.exited.then((exit) => ({ exit })),
    new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs))),
  ]).finally(() => clearTimeout(timer));
  if (first === 'timeout') {
    if (options.silenceIsOriginal) return { handle, lines: it, legacy: true, dstream: false, silent: true };
    handle.kill('SIGKILL');
    throw providerFailed(handle, `no handshake within ${timeoutMs} ms`);
  }
  if ('exit' in first) {
    // It may have written its answer and exited at once: read what it left before judging.
    const rest = await it.next();
    if (rest.done) throw providerFailed(handle, 'exited before its handshake', first.exit);
    return classify(handle, rest.value, it);
  }
  if (first.done) throw providerFailed(handle, 'exited before its handshake', await handle.exited);
  return classify(handle, first.value, it);
}

/** A line the decoder refuses (not JSON, too long) fails the session with the provider's name. */
function named(handle: ProviderHandle, it: AsyncIterator<unknown>): AsyncIterator<unknown> {
  return {
    next: () =>
      it.next().catch((err: unknown) => {
        if (!isDstreamError(err)) throw err;
        const rec = err.details as Partial<InvalidRecord> | undefined;
        const what = err.code === ErrorCodes.INVALID_RECORD && rec?.raw !== undefined ? `stdout line ${rec.line} is not a JSON line: ${rec.raw}` : err.message;
        throw new DstreamError(err.code, `${handle.label}: ${what}`, { cause: err, details: { provider: handle.label, ...rec } });
      }),
  };
}

function classify(handle: ProviderHandle, value: unknown, it: AsyncIterator<unknown>): Session {
  const hs = readHandshake(value);
  if (hs.kind === 'error') throw providerFailed(handle, hs.message);
  if (hs.kind === 'ready') return { handle, lines: it, legacy: false, dstream: hs.protocol >= 1 };
  // An older provider: no handshake, its first line is data.
  let pending: unknown = value;
  const lines: AsyncIterator<unknown> = {
    next: () => {
      if (pending !== undefined) {
        const v = pending;
        pending = undefined;
        return Promise.resolve({ value: v, done: false });
      }
      return it.next();
    },
  };
  return { handle, lines, legacy: true, dstream: false };
}
