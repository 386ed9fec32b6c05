/** How the CLI reports an error: one line on stderr, and with --json an object on stdout too. */
import type { Writable } from 'node:stream';
import { isDstreamError, messageOf } from '../errors.js';
import { exitCodeFor } from '../protocol/exit-codes.js';

/** An error on stderr (and as JSON on stdout with --json), with its exit code. */
export function reportError(io: { stdout: Writable; stderr: Writable }, o: { json?: boolean }, err: unknown, message = messageOf(err)): number {
  io.stderr.write(`dstream: ${message}\n`);
  if (o.json) {
    const code = isDstreamError(err) ? err.code : 'DSTREAM_ERR_UNKNOWN';
    const details = isDstreamError(err) ? err.details : {};
    io.stdout.write(`${JSON.stringify({ error: { code, message, ...details } })}\n`);
  }
  return exitCodeFor(err);
}

