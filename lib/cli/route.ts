/**
 * `dstream route`: stdin NDJSON -> stdout NDJSON through decode -> route -> encode.
 */
import type { WriteStream } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { decodeEnvelopes, DEFAULT_MAX_LINE_BYTES } from '../envelope/decode.js';
import { encodeEnvelopes } from '../envelope/encode.js';
import { KEEP_GOING, openDeadLetterFile, type InvalidPolicy } from '../envelope/invalid.js';
import { invalidOption, messageOf } from '../errors.js';
import { exitCodeFor, ExitCodes } from '../protocol/exit-codes.js';
import { displayTable, type Assignment } from '../streams/destination.js';
import { route } from '../streams/route.js';
import { isDstreamError } from '../errors.js';
import { Logger, type LogFormat } from '../log.js';

export interface RouteCommandOptions {
  template?: string;
  include?: string[];
  exclude?: string[];
  onInvalid?: InvalidPolicy;
  deadLetter?: string;
  maxLineBytes?: number;
  quiet?: boolean;
}

export interface CommandIO {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
  logFormat?: LogFormat;
}

export async function routeCommand(options: RouteCommandOptions, io: CommandIO): Promise<number> {
  const log = new Logger({ stream: io.stderr, format: io.logFormat ?? 'text', name: 'dstream route' });
  const say = (line: string) => log.info(line);
  let deadLetter: WriteStream | undefined;
  try {
    if (options.deadLetter !== undefined && options.onInvalid !== 'dead-letter' && options.onInvalid !== undefined) {
      throw invalidOption(`--dead-letter is only used with --on-invalid dead-letter (got --on-invalid ${options.onInvalid})`);
    }
    const onInvalid = options.onInvalid ?? (options.deadLetter !== undefined ? 'dead-letter' : 'fail');
    if (options.deadLetter !== undefined) deadLetter = await openDeadLetterFile(options.deadLetter);
    const policy = { onInvalid, deadLetter };
    const decoder = decodeEnvelopes({ ...policy, maxLineBytes: options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES });
    const router = route({ ...policy, template: options.template, include: options.include, exclude: options.exclude });
    if (!options.quiet) {
      router.on('destination', (a: Assignment) => {
        if (a.mapped) say(`table ${displayTable(a.table)} -> "${a.destination}" (name changed to fit Service Bus rules)`);
      });
    }
    try {
      await pipeline(io.stdin, decoder, router, encodeEnvelopes(), io.stdout);
    } finally {
      for (const line of [decoder.summary(), router.summary()]) if (line !== undefined) say(line);
      if (deadLetter !== undefined) await closeFile(deadLetter);
    }
    return ExitCodes.OK;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EPIPE') return ExitCodes.OK;
    if (deadLetter !== undefined && !deadLetter.closed) deadLetter.destroy();
    log.error(messageOf(err).replace(KEEP_GOING, 'choose --on-invalid skip or dead-letter to keep going'), isDstreamError(err) ? { code: err.code } : {});
    return exitCodeFor(err);
  }
}

function closeFile(stream: WriteStream): Promise<void> {
  return new Promise((resolve, reject) => {
    stream.once('error', reject);
    stream.end(() => resolve());
  });
}

export { DEFAULT_MAX_LINE_BYTES };
