import { createWriteStream, type WriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
import { DstreamError, ErrorCodes, invalidOption } from '../errors.js';

/**
 * What happens to a record that cannot be used: `fail` stops the stream with an error naming the
 * line; `skip` drops it, counts it and reports it at the end; `dead-letter` writes it, with the
 * reason and line number, to a stream the caller owns. Never silent and lossy.
 */
export type InvalidPolicy = 'fail' | 'skip' | 'dead-letter';
export const INVALID_POLICIES: readonly InvalidPolicy[] = ['fail', 'skip', 'dead-letter'];

export interface InvalidRecordOptions {
  /** Default `fail`. */
  onInvalid?: InvalidPolicy;
  /** Where `dead-letter` writes: one JSON line per record. Required with `dead-letter`; not ended by dstream. */
  deadLetter?: Writable;
}

export interface InvalidRecord {
  /** Which stage refused it: `decode`, `route`, ... */
  stage: string;
  /** 1-based input line, when known. */
  line?: number;
  reason: string;
  /** The record as it arrived (the raw line, or the envelope re-encoded). */
  raw: string;
  /** A line that is not valid UTF-8: its exact bytes (`raw` has U+FFFD in place of the bad ones). */
  rawBase64?: string;
}

export interface InvalidStats {
  skipped: number;
  deadLettered: number;
  /** The first invalid record seen, for summaries. */
  first?: InvalidRecord;
}

const EXCERPT = 80;

/** The library's advice; a command line says it in its own flags. */
export const KEEP_GOING = 'onInvalid "skip" or "dead-letter" keeps going';

export function excerpt(raw: string): string {
  const one = raw.replace(/\s+/g, ' ');
  return one.length <= EXCERPT ? one : `${one.slice(0, EXCERPT)}...`;
}

export function where(rec: Pick<InvalidRecord, 'line'>): string {
  return rec.line === undefined ? '' : `line ${rec.line}: `;
}

export class InvalidRecords {
  readonly policy: InvalidPolicy;
  readonly stats: InvalidStats = { skipped: 0, deadLettered: 0 };
  private readonly deadLetter: Writable | undefined;

  constructor(options: InvalidRecordOptions = {}) {
    const policy = options.onInvalid ?? 'fail';
    if (!INVALID_POLICIES.includes(policy)) {
      throw invalidOption(`onInvalid must be one of ${INVALID_POLICIES.join(', ')}; got ${JSON.stringify(policy)}`);
    }
    if (policy === 'dead-letter' && options.deadLetter === undefined) {
      throw invalidOption('onInvalid "dead-letter" needs a deadLetter stream to write to');
    }
    this.policy = policy;
    this.deadLetter = options.deadLetter;
  }

  /**
   * Applies the policy. Returns the error to fail with (policy `fail`), a promise that settles
   * once the dead-letter stream has taken the record, or undefined when the record was skipped.
   */
  handle(rec: InvalidRecord): DstreamError | Promise<void> | undefined {
    if (this.policy === 'fail') {
      return new DstreamError(
        ErrorCodes.INVALID_RECORD,
        `${where(rec)}${rec.reason}: ${excerpt(rec.raw)} (${KEEP_GOING})`,
        { details: { stage: rec.stage, line: rec.line, reason: rec.reason, raw: excerpt(rec.raw) } },
      );
    }
    this.stats.first ??= rec;
    if (this.policy === 'skip') {
      this.stats.skipped++;
      return undefined;
    }
    this.stats.deadLettered++;
    const out = this.deadLetter!;
    const line = `${JSON.stringify({ ...rec, at: new Date().toISOString() })}\n`;
    return new Promise<void>((resolve, reject) => {
      out.write(line, (err) => (err ? reject(deadLetterFailed(err)) : resolve()));
    });
  }

  /** One line for the end of a run, or undefined when nothing was refused. */
  summary(): string | undefined {
    const { skipped, deadLettered, first } = this.stats;
    if (first === undefined) return undefined;
    const what = skipped > 0 ? `skipped ${skipped}` : `dead-lettered ${deadLettered}`;
    const noun = skipped + deadLettered === 1 ? 'invalid record' : 'invalid records';
    return `${first.stage}: ${what} ${noun} (first: ${where(first)}${first.reason})`;
  }
}

function deadLetterFailed(err: Error): DstreamError {
  return new DstreamError(ErrorCodes.INVALID_RECORD, `could not write to the dead-letter stream: ${err.message}`, {
    cause: err,
  });
}

/**
 * Opens (appends to) a dead-letter file, or fails with what went wrong and where: before any
 * record needs it, so a path that cannot work is reported at start, not as a crash later. Errors
 * after that reach the writes that caused them (their callbacks), never an unhandled 'error'.
 */
export function openDeadLetterFile(path: string): Promise<WriteStream> {
  const file = createWriteStream(path, { flags: 'a' });
  return new Promise((resolve, reject) => {
    file.once('open', () => {
      file.off('error', onError);
      file.on('error', () => undefined);
      resolve(file);
    });
    const onError = (err: Error) =>
      reject(new DstreamError(ErrorCodes.IO, `could not open the dead-letter file ${path}: ${err.message}`, { cause: err, details: { path } }));
    file.once('error', onError);
  });
}
