/** How the CLI reports an error: one line on stderr, and with --json an object on stdout too. */
import type { Writable } from 'node:stream';
import { isDstreamError, messageOf } from '../errors.js';
import { exitCodeFor } from '../protocol/exit-codes.js';
import type { Logger } from '../log.js';

/** An error on stderr (and as JSON on stdout with --json), with its exit code. */
export function reportError(io: { stdout: Writable; stderr: Writable }, o: { json?: boolean }, err: unknown, said = messageOf(err), log?: Logger): number {
  const message = log === undefined ? said : log.redact(said);
  if (log === undefined) io.stderr.write(`dstream: ${message}\n`);
  else log.error(message, { ...(isDstreamError(err) ? { code: err.code } : {}), ...(isDstreamError(err) && typeof err.details?.provider === 'string' ? { provider: err.details.provider.split(' ').slice(1).join(' ').split('/').pop() } : {}) });
  if (o.json) {
    const code = isDstreamError(err) ? err.code : 'DSTREAM_ERR_UNKNOWN';
    const details = isDstreamError(err) ? err.details : {};
    io.stdout.write(`${JSON.stringify({ error: { code, message, ...details } })}\n`);
  }
  return exitCodeFor(err);
}

