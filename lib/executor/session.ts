/**
 * One conversation with a provider: send the command header, wait for the handshake (with a
 * timeout, noticing a crash before it), and hand back what follows as parsed lines. A first line
 * that is not a handshake comes from an older provider: it is data, and goes first.
 */
import { decodeEnvelopes } from '../envelope/decode.js';
import { DstreamError, ErrorCodes, isDstreamError } from '../errors.js';
import { readHandshake, type CommandHeader } from '../protocol/messages.js';
import type { ProviderHandle } from './provider-handle.js';

export interface Session {
  handle: ProviderHandle;
  /** Every line after the handshake (or from the first line, for an older provider). */
  lines: AsyncIterator<unknown>;
  legacy: boolean;
}

export function providerFailed(handle: ProviderHandle, what: string, exit?: { code: number | null; signal: NodeJS.Signals | null }): DstreamError {
  const how = exit === undefined ? '' : exit.signal ? ` (killed by ${exit.signal})` : ` (exit code ${exit.code})`;
  const tail = handle.stderrTail().trim();
  return new DstreamError(ErrorCodes.PROVIDER, `${handle.label}: ${what}${how}${tail ? `\n--- last lines of its stderr ---\n${tail}` : ''}`, {
    details: { provider: handle.label, ...exit },
  });
}

export async function openSession(handle: ProviderHandle, header: CommandHeader, options: { handshakeTimeoutMs?: number; endInput?: boolean } = {}): Promise<Session> {
  handle.stdin.write(`${JSON.stringify(header)}\n`);
  if (options.endInput) handle.stdin.end();
  const values = handle.stdout.pipe(decodeEnvelopes({ raw: true, maxLineBytes: 64 * 1024 * 1024 }));
  const it = protocolLines(handle, values[Symbol.asyncIterator]());
  const timeoutMs = handle.handshakeTimeoutMs ?? options.handshakeTimeoutMs ?? 30_000;
  let timer: NodeJS.Timeout | undefined;
  const first = await Promise.race([
    it.next(),
    handle.exited.then((exit) => ({ exit })),
    new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs))),
  ]).finally(() => clearTimeout(timer));
  if (first === 'timeout') {
    handle.kill('SIGKILL');
    throw providerFailed(handle, `no handshake within ${timeoutMs} ms (stopped; handshake_timeout in its block allows it longer)`);
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

/**
 * A provider's stdout carries protocol lines only: a line that is not JSON is the provider's
 * fault, said with its name and a short printable excerpt (never the whole garbage), and is not a
 * record for an invalid-record policy to skip.
 */
function protocolLines(handle: ProviderHandle, it: AsyncIterator<unknown>): AsyncIterator<unknown> {
  return {
    next: () =>
      it.next().catch((err: unknown) => {
        if (!isDstreamError(err) || (err.code !== ErrorCodes.INVALID_RECORD && err.code !== ErrorCodes.LINE_TOO_LONG)) throw err;
        handle.stdout.destroy();
        const line = typeof err.details.line === 'number' ? ` line ${err.details.line}` : '';
        const raw = typeof err.details.raw === 'string' ? err.details.raw : typeof err.details.excerpt === 'string' ? err.details.excerpt : '';
        const shown = JSON.stringify(raw.slice(0, 40)).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
        throw providerFailed(
          handle,
          `wrote${line} on stdout that is not a protocol line (${err.code === ErrorCodes.LINE_TOO_LONG ? 'too long' : 'not JSON'}), starting ${shown}${raw.length > 40 ? '...' : ''}; a provider writes only protocol JSON on stdout and its logs on stderr`,
        );
      }),
  };
}

function classify(handle: ProviderHandle, value: unknown, it: AsyncIterator<unknown>): Session {
  const hs = readHandshake(value);
  if (hs.kind === 'error') throw providerFailed(handle, hs.message);
  if (hs.kind === 'ready') return { handle, lines: it, legacy: false };
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
  return { handle, lines, legacy: true };
}
