/**
 * Log sequence numbers. SQL Server hands them out as binary(10); dstream writes them as
 * `0x` + 20 upper-case hex digits, the form SQL Server itself prints, so equal LSNs have equal
 * text and text order is LSN order.
 */
import { invalidOption } from '../../errors.js';

export const LSN_BYTES = 10;
export const ZERO_LSN = Buffer.alloc(LSN_BYTES);

const DIGITS = [...'0123456789ABCDEF'].map((c) => c.charCodeAt(0));
/** The character codes of each byte's high and low hex digit. */
const HIGH = Array.from({ length: 256 }, (_, i) => DIGITS[i >> 4]!);
const LOW = Array.from({ length: 256 }, (_, i) => DIGITS[i & 15]!);
const chars = String.fromCharCode;

/**
 * `0x` + upper-case hex. Ten bytes (an LSN or a seqval: one or two per change row) are written in
 * one string, without the two intermediate strings of toString('hex').toUpperCase().
 */
export function lsnToHex(lsn: Uint8Array): string {
  if (lsn.length !== LSN_BYTES) return `0x${Buffer.from(lsn.buffer, lsn.byteOffset, lsn.byteLength).toString('hex').toUpperCase()}`;
  const h = HIGH;
  const l = LOW;
  const b = lsn;
  // prettier-ignore
  return chars(48, 120, h[b[0]!]!, l[b[0]!]!, h[b[1]!]!, l[b[1]!]!, h[b[2]!]!, l[b[2]!]!, h[b[3]!]!, l[b[3]!]!, h[b[4]!]!, l[b[4]!]!,
    h[b[5]!]!, l[b[5]!]!, h[b[6]!]!, l[b[6]!]!, h[b[7]!]!, l[b[7]!]!, h[b[8]!]!, l[b[8]!]!, h[b[9]!]!, l[b[9]!]!);
}

/** Parses `0x0000002A000001F00003` (or without 0x, any case); throws INVALID_OPTION naming `what`. */
export function lsnFromHex(text: string, what = 'LSN'): Buffer {
  const digits = typeof text === 'string' ? text.replace(/^0x/i, '') : '';
  if (!/^[0-9a-fA-F]{20}$/.test(digits)) {
    throw invalidOption(`${what} must be 10 bytes in hex, like 0x0000002A000001F00003; got ${JSON.stringify(text)}`);
  }
  return Buffer.from(digits, 'hex');
}

/**
 * Byte order, as Buffer.compare (-1, 0, 1), compared here rather than by Buffer.compare: for ten
 * bytes, a call into the runtime costs more than the comparison (it runs several times per change row).
 */
export function compareLsn(a: Uint8Array, b: Uint8Array): number {
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

export function maxLsn(a: Buffer, b: Buffer): Buffer {
  return Buffer.compare(a, b) >= 0 ? a : b;
}

/**
 * The next LSN, as sys.fn_cdc_increment_lsn returns it: the 10 bytes read as one unsigned integer,
 * plus one. Where a window starts after the last one read: the smallest LSN past it, whatever LSNs
 * the server hands out, so the reader works it out here rather than asking (a round trip on the
 * way from one window to the next).
 */
export function incrementLsn(lsn: Uint8Array): Buffer {
  const out = Buffer.from(lsn);
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i] !== 0xff) {
      out[i]! += 1;
      return out;
    }
    out[i] = 0;
  }
  throw invalidOption(`LSN ${lsnToHex(lsn)} has no successor`);
}

/** The LSN before `lsn`: the 10 bytes read as one unsigned integer, minus one. */
export function decrementLsn(lsn: Uint8Array): Buffer {
  const out = Buffer.from(lsn);
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i] !== 0) {
      out[i]! -= 1;
      return out;
    }
    out[i] = 0xff;
  }
  throw invalidOption(`LSN ${lsnToHex(lsn)} has no predecessor`);
}

/** An LSN from a number (tests and the in-memory model). */
export function lsnOf(n: number | bigint): Buffer {
  const out = Buffer.alloc(LSN_BYTES);
  let v = BigInt(n);
  for (let i = LSN_BYTES - 1; i >= 0 && v > 0n; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}
