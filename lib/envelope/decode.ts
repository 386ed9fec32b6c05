/**
 * NDJSON bytes -> envelopes.
 *
 * Lines are found by scanning Buffers for 0x0A, which never occurs inside a multi-byte UTF-8
 * sequence, so a character split across chunks is decoded whole once its line is complete; no
 * StringDecoder is needed on the hot path. The partial line is carried as a list of Buffers and
 * capped by `maxLineBytes`. A line that is not valid UTF-8 is an invalid record like any other
 * (never silently decoded with U+FFFD in place of its bad bytes).
 */
import { isUtf8 } from 'node:buffer';
import { Transform, type TransformCallback } from 'node:stream';
import { DstreamError, ErrorCodes, invalidOption } from '../errors.js';
import { InvalidRecords, type InvalidRecord, type InvalidRecordOptions, type InvalidStats } from './invalid.js';
import type { Envelope } from './types.js';
import { envelopeProblem } from './validate.js';
import { checkOptions } from '../options.js';
import type { DuplexEvents, Listen } from '../events.js';

export const DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024;

export interface DecodeOptions extends InvalidRecordOptions {
  /** Longest accepted line in bytes, newline excluded. Default 4 MiB. */
  maxLineBytes?: number;
  /**
   * Treat the first non-blank line as a protocol header: it must be a JSON object and is passed
   * on as the first chunk without envelope validation. Later lines are envelopes. Used by
   * provider hosts in front of `routeCommands()`.
   */
  header?: boolean;
  /** Objects buffered on the readable side. Default 16. */
  highWaterMark?: number;
  /**
   * Emit every JSON value without the envelope check: for reading a provider's stdout, where
   * protocol lines (handshake, results) and envelopes mix. JSON errors still get the policy.
   */
  raw?: boolean;
}

export interface DecodeStats extends InvalidStats {
  /** Lines read, blank ones included. */
  lines: number;
  /** Envelopes emitted. */
  envelopes: number;
}

/**
 * Where an envelope's input line number is kept: a non-enumerable symbol property, invisible to
 * JSON.stringify, Object.keys and deep-equality checks. A WeakMap cost about 10% of decode+route+encode
 * throughput (best of 7 rounds, A/B); this costs nothing measurable. `Symbol.for`, so that two copies of dstream agree.
 */
const LINE = Symbol.for('dstream.line');

/** The input line an envelope was decoded from, when it came through `decodeEnvelopes()`. */
export function lineOf(envelope: object): number | undefined {
  return (envelope as { [LINE]?: number })[LINE];
}

const LF = 0x0a;

/** `decodeEnvelopes()`'s events besides a Transform's: `'invalid'` with each line refused. */
export interface EnvelopeDecoderEvents {
  invalid: [record: InvalidRecord];
}

export interface EnvelopeDecoder {
  on: Listen<EnvelopeDecoderEvents, this, DuplexEvents>;
  once: Listen<EnvelopeDecoderEvents, this, DuplexEvents>;
  off: Listen<EnvelopeDecoderEvents, this, DuplexEvents>;
}

export class EnvelopeDecoder extends Transform {
  private readonly maxLineBytes: number;
  private readonly invalid: InvalidRecords;
  private expectHeader: boolean;
  private readonly raw: boolean;
  private carry: Buffer[] = [];
  private carryBytes = 0;
  private lineNo = 0;
  private envelopes = 0;
  private pending: Promise<void>[] = [];
  /** The bytes of the line being read (`src` from `srcStart` to `srcEnd`), for the UTF-8 check. */
  private src: Buffer = Buffer.alloc(0);
  private srcStart = 0;
  private srcEnd = 0;

  constructor(options: DecodeOptions = {}) {
    super({ writableObjectMode: false, readableObjectMode: true, readableHighWaterMark: options.highWaterMark ?? 16 });
    const max = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
    if (!Number.isInteger(max) || max < 1) throw invalidOption(`maxLineBytes must be a positive integer; got ${max}`);
    this.maxLineBytes = max;
    this.invalid = new InvalidRecords(options);
    this.expectHeader = options.header === true;
    this.raw = options.raw === true;
  }

  get stats(): DecodeStats {
    return { ...this.invalid.stats, lines: this.lineNo, envelopes: this.envelopes };
  }

  /** The end-of-run line for skipped or dead-lettered records, if any. */
  summary(): string | undefined {
    return this.invalid.summary();
  }

  override _transform(chunk: Buffer | string, encoding: BufferEncoding, callback: TransformCallback): void {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk, encoding) : chunk;
    let start = 0;
    let nl = buf.indexOf(LF, 0);
    try {
      if (nl !== -1 && this.carryBytes > 0) {
        this.checkLength(this.carryBytes + nl);
        this.line(this.takeCarry(buf.subarray(0, nl)));
        start = nl + 1;
        nl = buf.indexOf(LF, start);
      }
      while (nl !== -1) {
        this.checkLength(nl - start);
        this.src = buf;
        this.srcStart = start;
        this.srcEnd = nl;
        this.line(buf.toString('utf8', start, nl));
        start = nl + 1;
        nl = buf.indexOf(LF, start);
      }
      if (start < buf.length) {
        this.checkLength(this.carryBytes + buf.length - start);
        // Copy: the caller may reuse its buffer, and a subarray would pin the whole chunk.
        this.carry.push(Buffer.from(buf.subarray(start)));
        this.carryBytes += buf.length - start;
      }
    } catch (err) {
      this.settle(callback, err as Error);
      return;
    }
    this.settle(callback);
  }

  override _flush(callback: TransformCallback): void {
    if (this.carryBytes > 0) {
      const tail = this.takeCarry();
      try {
        this.line(tail);
      } catch (err) {
        this.settle(callback, err as Error);
        return;
      }
    }
    this.settle(callback);
  }

  /** The carried partial line, completed by `rest`, as text; the carry is emptied. */
  private takeCarry(rest?: Buffer): string {
    if (rest !== undefined) {
      this.carry.push(rest);
      this.carryBytes += rest.length;
    }
    const bytes = Buffer.concat(this.carry, this.carryBytes);
    this.carry = [];
    this.carryBytes = 0;
    this.src = bytes;
    this.srcStart = 0;
    this.srcEnd = bytes.length;
    return bytes.toString('utf8');
  }

  /**
   * Calls back once every dead-letter write of this chunk has been taken. With `failure` (a later
   * line failed the stream), the writes before it still finish first and `failure` is reported;
   * a failed dead-letter write is never dropped as an unhandled rejection.
   */
  private settle(callback: TransformCallback, failure?: Error): void {
    if (this.pending.length === 0) {
      callback(failure);
      return;
    }
    const waits = this.pending;
    this.pending = [];
    Promise.allSettled(waits).then((results) => {
      const rejected = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      callback(failure ?? (rejected?.reason as Error | undefined));
    });
  }

  private checkLength(bytes: number): void {
    const line = this.lineNo + 1;
    if (bytes > this.maxLineBytes) {
      throw new DstreamError(
        ErrorCodes.LINE_TOO_LONG,
        `line ${line} is longer than maxLineBytes (${this.maxLineBytes} bytes) and was not read; ` +
          'raise --max-line-bytes if such records are expected',
        { details: { line, maxLineBytes: this.maxLineBytes } },
      );
    }
  }

  private line(text: string): void {
    const n = ++this.lineNo;
    // Bad bytes decode to U+FFFD, which valid text may hold too: only then are the bytes checked.
    if (text.includes('\uFFFD')) {
      const bytes = this.src.subarray(this.srcStart, this.srcEnd);
      if (!isUtf8(bytes)) {
        const reason = `not valid UTF-8 (byte ${firstBadByte(bytes) + 1} of the line)`;
        if (this.expectHeader) throw this.badHeader(n, text, reason);
        this.refuse({ stage: 'decode', line: n, reason, raw: text, rawBase64: bytes.toString('base64') });
        return;
      }
    }
    if (n === 1 && text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    if (text.charCodeAt(text.length - 1) === 0x0d) text = text.slice(0, -1);
    // Fast path: nearly every line starts with '{'. Anything else may be blank or whitespace.
    if (text.charCodeAt(0) !== 0x7b && text.trim().length === 0) return;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      if (this.expectHeader) throw this.badHeader(n, text, (err as Error).message);
      this.refuse({ stage: 'decode', line: n, reason: `not valid JSON (${(err as Error).message})`, raw: text });
      return;
    }
    if (this.expectHeader) {
      this.expectHeader = false;
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        throw this.badHeader(n, text, 'not a JSON object');
      }
      this.push(value);
      return;
    }
    const problem = this.raw ? undefined : envelopeProblem(value);
    if (problem !== undefined) {
      this.refuse({ stage: 'decode', line: n, reason: `not an envelope: ${problem}`, raw: text });
      return;
    }
    if (typeof value === 'object' && value !== null) Object.defineProperty(value, LINE, { value: n });
    this.envelopes++;
    this.push(value);
  }

  private refuse(rec: InvalidRecord): void {
    const outcome = this.invalid.handle(rec);
    if (outcome instanceof Error) throw outcome;
    this.emit('invalid', rec);
    if (outcome !== undefined) this.pending.push(outcome);
  }

  private badHeader(line: number, text: string, why: string): DstreamError {
    return new DstreamError(
      ErrorCodes.PROTOCOL,
      `line ${line}: the command header is ${why}; expected {"command":"run|discover|init|plan|status|destroy","config":{...}}`,
      { details: { line, excerpt: text.slice(0, 80) } },
    );
  }
}

/** Index of the first byte of `b` that does not belong to a well-formed UTF-8 sequence (RFC 3629). */
export function firstBadByte(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i]!;
    const [n, lo, hi] = c < 0x80 ? [0, 0, 0] : c >= 0xc2 && c <= 0xdf ? [1, 0x80, 0xbf] : c === 0xe0 ? [2, 0xa0, 0xbf] : c === 0xed ? [2, 0x80, 0x9f] : c >= 0xe1 && c <= 0xef ? [2, 0x80, 0xbf] : c === 0xf0 ? [3, 0x90, 0xbf] : c >= 0xf1 && c <= 0xf3 ? [3, 0x80, 0xbf] : c === 0xf4 ? [3, 0x80, 0x8f] : [-1, 0, 0];
    if (n < 0 || i + n >= b.length) return i;
    // The second byte has the narrower range (no overlongs, no surrogates, nothing past U+10FFFF).
    for (let k = 1; k <= n; k++) {
      const x = b[i + k]!;
      if (k === 1 ? x < lo || x > hi : x < 0x80 || x > 0xbf) return i;
    }
    i += n + 1;
  }
  return b.length;
}

/** Bytes -> envelopes. See `DecodeOptions` for line limits, headers and invalid-record policy. */
export function decodeEnvelopes(options?: DecodeOptions): EnvelopeDecoder {
  checkOptions('decodeEnvelopes', options);
  return new EnvelopeDecoder(options);
}

export type { Envelope };
