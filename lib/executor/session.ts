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
import { STDERR_TAIL_HEADING } from '../log.js';
import type { ProviderHandle } from './provider-handle.js';
import type { Readable } from 'node:stream';

export interface Session {
  handle: ProviderHandle;
  /** Every message after the handshake, as values (for an older provider, after `first`). */
  values: Readable;
  /** An older provider has no handshake: its first line is data, and comes before `values`. */
  first?: { value: unknown };
  /** `first` then `values`, as an iterator, for reading one result line. */
  lines: AsyncIterator<unknown>;
  /** No handshake: its first line was data (or, with `silenceIsOriginal`, nothing came). */
  legacy: boolean;
  /** Its handshake declared dstream's protocol (`"protocol": n`); originals never do. */
  dstream: boolean;
  /** With `silenceIsOriginal`: nothing came before the timeout. */
  silent?: boolean;
}

/**
 * A provider failed. `providerCode` is the code it gave (an error line's `code`), kept in
 * `details.providerCode` so that callers branch on it, never on the wording.
 */
export function providerFailed(handle: ProviderHandle, what: string, exit?: { code: number | null; signal: NodeJS.Signals | null }, providerCode?: string): DstreamError {
  const how = exit === undefined ? '' : exit.signal ? ` (killed by ${exit.signal})` : ` (exit code ${exit.code})`;
  const tail = handle.stderrTail().trim();
  return new DstreamError(ErrorCodes.PROVIDER, `${handle.label}: ${what}${how}${tail ? `\n${STDERR_TAIL_HEADING}\n${tail}` : ''}`, {
    details: { provider: handle.label, ...exit, ...(providerCode === undefined ? {} : { providerCode }) },
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
  handle.stdin.write(handle.objectMode ? header : `${JSON.stringify(header)}\n`);
  if (options.endInput) handle.stdin.end();
  const stray = options.onStrayLine;
  const values = handle.objectMode
    ? handle.stdout
    : handle.stdout.pipe(
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
  const timeoutMs = handle.handshakeTimeoutMs ?? options.handshakeTimeoutMs ?? 30_000;
  let timer: NodeJS.Timeout | undefined;
  const firstValue = readOne(values).catch((err: unknown) => {
    throw namedError(handle, err);
  });
  const first = await Promise.race([
    firstValue,
    handle.exited.then((exit) => ({ exit })),
    new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs))),
  ]).finally(() => clearTimeout(timer));
  if (first === 'timeout') {
    if (options.silenceIsOriginal) return { handle, values, lines: named(handle, values[Symbol.asyncIterator]()), legacy: true, dstream: false, silent: true };
    handle.kill('SIGKILL');
    throw providerFailed(handle, `no handshake within ${timeoutMs} ms (stopped; handshake_timeout in its block allows it longer)`);
  }
  if ('exit' in first) {
    // It may have written its answer and exited at once: read what it left before judging.
    const rest = await firstValue;
    if (rest.done) throw providerFailed(handle, 'exited before its handshake', first.exit);
    return classify(handle, rest.value, values);
  }
  if (first.done) throw providerFailed(handle, 'exited before its handshake', await handle.exited);
  return classify(handle, first.value, values);
}

/** The next value of a paused Readable, or done at its end; leaves the rest for a later reader. */
function readOne(r: Readable): Promise<{ done: false; value: unknown } | { done: true }> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      r.off('readable', take);
      r.off('end', onEnd);
      r.off('error', onError);
    };
    const take = () => {
      const value: unknown = r.read();
      if (value === null) return;
      cleanup();
      resolve({ done: false, value });
    };
    const onEnd = () => {
      cleanup();
      resolve({ done: true });
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    r.on('readable', take);
    r.once('end', onEnd);
    r.once('error', onError);
  });
}

/**
 * A provider's stdout carries protocol lines only: a line that is not JSON is the provider's
 * fault, said with its name and a short printable excerpt (never the whole garbage), and is not a
 * record for an invalid-record policy to skip.
 */
export function namedError(handle: ProviderHandle, err: unknown): unknown {
  if (!isDstreamError(err) || (err.code !== ErrorCodes.INVALID_RECORD && err.code !== ErrorCodes.LINE_TOO_LONG)) return err;
  handle.stdout.destroy();
  const line = typeof err.details.line === 'number' ? ` line ${err.details.line}` : '';
  const raw = typeof err.details.raw === 'string' ? err.details.raw : typeof err.details.excerpt === 'string' ? err.details.excerpt : '';
  const quoted = JSON.stringify(raw.slice(0, 40)).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return providerFailed(
    handle,
    `wrote${line} on stdout that is not a protocol line (${err.code === ErrorCodes.LINE_TOO_LONG ? 'too long' : typeof err.details.reason === 'string' && err.details.reason.startsWith('not valid UTF-8') ? err.details.reason : 'not JSON'}), starting ${quoted}${raw.length > 40 ? '...' : ''}; a provider writes only protocol JSON on stdout and its logs on stderr`,
  );
}

function named(handle: ProviderHandle, it: AsyncIterator<unknown>): AsyncIterator<unknown> {
  return {
    next: () =>
      it.next().catch((err: unknown) => {
        throw namedError(handle, err);
      }),
  };
}

function classify(handle: ProviderHandle, value: unknown, values: Readable): Session {
  const hs = readHandshake(value);
  if (hs.kind === 'error') throw providerFailed(handle, hs.message, undefined, hs.code);
  // An older provider has no handshake: its first line is data, and goes first.
  let pending = hs.kind === 'legacy' ? { value } : undefined;
  const first = pending;
  let it: AsyncIterator<unknown> | undefined;
  const lines: AsyncIterator<unknown> = {
    next: () => {
      if (pending !== undefined) {
        const { value: v } = pending;
        pending = undefined;
        return Promise.resolve({ value: v, done: false });
      }
      return (it ??= named(handle, values[Symbol.asyncIterator]())).next();
    },
  };
  return { handle, values, lines, legacy: hs.kind === 'legacy', dstream: hs.kind === 'ready' && hs.protocol >= 1, ...(first ? { first } : {}) };
}
