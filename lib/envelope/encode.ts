/**
 * Envelopes -> NDJSON bytes.
 *
 * Small writes are coalesced: lines accumulate in one string that is pushed when it reaches
 * `chunkBytes`, or on the next tick, so a burst written in one tick leaves as one chunk (one
 * syscall downstream) and a lone envelope is never held back waiting for company.
 *
 * Backpressure holds on every path: while the readable side is full, the write callback is held
 * until the reader asks for more (`_read`), so the writer sees `write()` return false and waits
 * for 'drain'. What the encoder holds is bounded by its two buffers plus one chunk.
 */
import { Duplex } from 'node:stream';
import { DstreamError, ErrorCodes, invalidOption } from '../errors.js';
import { checkOptions } from '../options.js';

export interface EncodeOptions {
  /** Push once this many UTF-16 code units are pending. Default 64 KiB. */
  chunkBytes?: number;
  /** Objects buffered on the writable side. Default 16. */
  highWaterMark?: number;
}

export class EnvelopeEncoder extends Duplex {
  private readonly chunkBytes: number;
  private pendingText = '';
  private scheduled = false;
  /** A write callback held back because the readable side is full. */
  private waiting: ((err?: Error | null) => void) | null = null;

  constructor(options: EncodeOptions = {}) {
    super({
      writableObjectMode: true,
      readableObjectMode: false,
      writableHighWaterMark: options.highWaterMark ?? 16,
    });
    const size = options.chunkBytes ?? 64 * 1024;
    if (!Number.isInteger(size) || size < 1) throw invalidOption(`chunkBytes must be a positive integer; got ${size}`);
    this.chunkBytes = size;
  }

  override _write(envelope: unknown, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    let line: string | undefined;
    try {
      line = JSON.stringify(envelope);
    } catch (err) {
      callback(notEncodable(err));
      return;
    }
    if (line === undefined) {
      callback(notEncodable(new Error(`${typeof envelope} has no JSON form`)));
      return;
    }
    this.pendingText += `${line}\n`;
    if (this.pendingText.length >= this.chunkBytes) this.pushPending();
    else if (!this.scheduled) {
      this.scheduled = true;
      process.nextTick(() => this.tick());
    }
    // The readable side is full (whether this push or an earlier tick filled it): hold the writer.
    if (this.readableLength >= this.readableHighWaterMark) this.waiting = callback;
    else callback();
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.pushPending();
    this.push(null);
    callback();
  }

  override _read(): void {
    const cb = this.waiting;
    if (cb !== null) {
      this.waiting = null;
      cb();
    }
  }

  private tick(): void {
    this.scheduled = false;
    if (this.pendingText.length > 0 && !this.destroyed) this.pushPending();
  }

  private pushPending(): void {
    if (this.pendingText.length === 0) return;
    const text = this.pendingText;
    this.pendingText = '';
    this.push(text, 'utf8');
  }
}

function notEncodable(cause: unknown): DstreamError {
  const why = cause instanceof Error ? cause.message : String(cause);
  return new DstreamError(ErrorCodes.INVALID_RECORD, `envelope cannot be encoded as JSON: ${why}`, { cause });
}

/** Envelopes -> NDJSON bytes, one line per envelope. */
export function encodeEnvelopes(options?: EncodeOptions): EnvelopeEncoder {
  checkOptions('encodeEnvelopes', options);
  return new EnvelopeEncoder(options);
}
