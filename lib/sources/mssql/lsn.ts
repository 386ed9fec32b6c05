/**
 * Log sequence numbers. SQL Server hands them out as binary(10); dstream writes them as
 * `0x` + 20 upper-case hex digits, the form SQL Server itself prints, so equal LSNs have equal
 * text and text order is LSN order.
 */
import { invalidOption } from '../../errors.js';

export const LSN_BYTES = 10;
export const ZERO_LSN = Buffer.alloc(LSN_BYTES);

export function lsnToHex(lsn: Uint8Array): string {
  const b = Buffer.isBuffer(lsn) ? lsn : Buffer.from(lsn.buffer, lsn.byteOffset, lsn.byteLength);
  return `0x${b.toString('hex').toUpperCase()}`;
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

/** The next LSN (what sys.fn_cdc_increment_lsn returns): the 10 bytes read as one unsigned integer, plus one. */
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
