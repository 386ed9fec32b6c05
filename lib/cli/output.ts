/** How the CLI reports an error: one line on stderr, and with --json an object on stdout too. */
import type { Writable } from 'node:stream';
import { isDstreamError, messageOf } from '../errors.js';
import { exitCodeFor } from '../protocol/exit-codes.js';
import { splitStderrTail, stderrValues, type Logger } from '../log.js';

/** An error on stderr (and as JSON on stdout with --json), with its exit code. */
export function reportError(io: { stdout: Writable; stderr: Writable }, o: { json?: boolean }, err: unknown, said = messageOf(err), log?: Logger): number {
  const message = log === undefined ? said : log.redact(said);
  // A provider's stderr tail is data beside the message (JSON forms), not text inside it.
  const { message: head, stderr } = splitStderrTail(message);
  if (log === undefined) io.stderr.write(`dstream: ${message}\n`);
  else log.error(head, { ...(isDstreamError(err) ? { code: err.code } : {}), ...(isDstreamError(err) && typeof err.details?.provider === 'string' ? { provider: err.details.provider.split(' ').slice(1).join(' ').split('/').pop() } : {}), stderr });
  if (o.json) {
    const code = isDstreamError(err) ? err.code : 'DSTREAM_ERR_UNKNOWN';
    // A provider's exit code (details.code) must not take the place of the error's code.
    const { code: exitCode, ...details } = isDstreamError(err) ? err.details : {};
    const exit = typeof exitCode === 'number' ? { exitCode } : {};
    io.stdout.write(`${JSON.stringify({ error: { code, message: head, ...details, ...exit, ...(stderr.length === 0 ? {} : { stderr: stderrValues(stderr) }) } })}\n`);
  }
  return exitCodeFor(err);
}

