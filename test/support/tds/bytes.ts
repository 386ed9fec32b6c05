/**
 * Bytes for the TDS test server: a growable little-endian writer for token streams, a reader for
 * client messages, and the cut of a token stream into TDS packets (MS-TDS 2.2.3: 8-byte header,
 * big-endian length, EOM status bit on the last packet of a message).
 */

/** Packet types (MS-TDS 2.2.3.1.1). */
export const PKT = {
  SQL_BATCH: 0x01,
  RPC: 0x03,
  TABULAR: 0x04,
  ATTENTION: 0x06,
  BULK: 0x07,
  TRANSACTION_MANAGER: 0x0e,
  LOGIN7: 0x10,
  PRELOGIN: 0x12,
} as const;

/** Packet status bits (MS-TDS 2.2.3.1.2). */
export const STATUS_EOM = 0x01;
export const STATUS_IGNORE = 0x02;
export const HEADER = 8;

const NOT_CP1252 = /[^\x00-\x7f\u00a0-\u00ff]/;
/** Windows-1252 characters at 0x80..0x9F (the rest of the page is Latin-1). */
const CP1252_HIGH = '\u20ac\u0081\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\u008d\u017d\u008f\u0090\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\u009d\u017e\u0178';

/**
 * A little-endian byte builder that grows by doubling; writes go straight into one buffer. Integers
 * are stored byte by byte and floats through a DataView: Buffer's write* methods validate their
 * arguments on every call and cost several times more per row.
 */
export class ByteWriter {
  buf: Buffer;
  private view: DataView;
  pos = 0;

  constructor(initial = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(initial);
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.length);
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
    this.view = new DataView(next.buffer, next.byteOffset, next.length);
  }

  u8(v: number): void {
    this.ensure(1);
    this.buf[this.pos++] = v;
  }
  u16(v: number): void {
    this.ensure(2);
    const b = this.buf;
    b[this.pos++] = v;
    b[this.pos++] = v >>> 8;
  }
  u32(v: number): void {
    this.ensure(4);
    const b = this.buf;
    b[this.pos++] = v;
    b[this.pos++] = v >>> 8;
    b[this.pos++] = v >>> 16;
    b[this.pos++] = v >>> 24;
  }
  /** Two's complement for negative values: the same bytes as u32 of (v >>> 0). */
  i32(v: number): void {
    this.u32(v);
  }
  i64(v: bigint): void {
    this.ensure(8);
    this.view.setBigInt64(this.pos, v, true);
    this.pos += 8;
  }
  /** A safe integer (|v| < 2^53) as 8 bytes, two's complement, without going through BigInt. */
  i64n(v: number): void {
    const high = Math.floor(v / 0x100000000);
    this.u32(v - high * 0x100000000);
    this.u32(high);
  }
  f64(v: number): void {
    this.ensure(8);
    this.view.setFloat64(this.pos, v, true);
    this.pos += 8;
  }
  f32(v: number): void {
    this.ensure(4);
    this.view.setFloat32(this.pos, v, true);
    this.pos += 4;
  }
  /** An unsigned integer below 2^48 in `bytes` bytes (3 to 5 for time and date parts). */
  uintN(v: number, bytes: number): void {
    this.ensure(bytes);
    const b = this.buf;
    const low = v >>> 0;
    b[this.pos++] = low;
    b[this.pos++] = low >>> 8;
    b[this.pos++] = low >>> 16;
    if (bytes > 3) b[this.pos++] = low >>> 24;
    if (bytes > 4) b[this.pos++] = Math.floor(v / 0x100000000);
  }
  bytes(b: Uint8Array): void {
    const n = b.length;
    this.ensure(n);
    if (n > 32) this.buf.set(b, this.pos);
    else for (let i = 0, o = this.pos, d = this.buf; i < n; i++) d[o + i] = b[i]!;
    this.pos += n;
  }
  /** UCS-2 text without a length (2 bytes per UTF-16 code unit); short strings byte by byte. */
  ucs2(s: string): void {
    const n = s.length;
    this.ensure(n * 2);
    if (n > 48) {
      this.pos += this.buf.write(s, this.pos, n * 2, 'ucs2');
      return;
    }
    const b = this.buf;
    let o = this.pos;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      b[o++] = c;
      b[o++] = c >>> 8;
    }
    this.pos = o;
  }
  /**
   * Text in the code page of the server collation (Windows-1252, as encodeCp1252), one byte per
   * character, straight into the buffer: a varchar value needs no Buffer of its own.
   */
  cp1252(s: string): void {
    const n = s.length;
    this.ensure(n);
    const b = this.buf;
    let o = this.pos;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x80 || (c >= 0xa0 && c <= 0xff)) b[o++] = c;
      else {
        const high = CP1252_HIGH.indexOf(s[i]!);
        b[o++] = high >= 0 ? 0x80 + high : 0x3f;
      }
    }
    this.pos = o;
  }
  /** B_VARCHAR: a character count in one byte, then UCS-2. */
  bVarchar(s: string): void {
    this.u8(s.length);
    this.ucs2(s);
  }
  /** US_VARCHAR: a character count in two bytes, then UCS-2. */
  usVarchar(s: string): void {
    this.u16(s.length);
    this.ucs2(s);
  }
  /** Reserve `n` bytes, returning their offset (for lengths known only afterwards). */
  skip(n: number): number {
    this.ensure(n);
    const at = this.pos;
    this.pos += n;
    return at;
  }
  reset(): void {
    this.pos = 0;
  }
}

/** Text in the code page of the server collation (Windows-1252). */
export function encodeCp1252(s: string): Buffer {
  if (!NOT_CP1252.test(s)) return Buffer.from(s, 'latin1');
  const out = Buffer.allocUnsafe(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const high = CP1252_HIGH.indexOf(s[i]!);
    out[i] = c < 0x80 || (c >= 0xa0 && c <= 0xff) ? c : high >= 0 ? 0x80 + high : 0x3f;
  }
  return out;
}

// Node's TextDecoder('windows-1252') decodes 0x80..0x9F as Latin-1 control characters, so map them here.
export function decodeCp1252(b: Buffer): string {
  const s = b.toString('latin1');
  return /[\x80-\x9f]/.test(s) ? s.replace(/[\x80-\x9f]/g, (c) => CP1252_HIGH[c.charCodeAt(0) - 0x80]!) : s;
}

/** A cursor over one client message. Reads past the end throw, so a short message is an error. */
export class ByteReader {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  get remaining(): number {
    return this.buf.length - this.pos;
  }
  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw new RangeError(`message ends ${this.pos + n - this.buf.length} byte(s) early`);
  }
  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }
  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16LE(this.pos);
    this.pos += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  take(n: number): Buffer {
    this.need(n);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  ucs2(chars: number): string {
    return this.take(chars * 2).toString('ucs2');
  }
}

/**
 * Cuts a token stream into packets of `packetSize` bytes (header included). Without `last`, only
 * full packets are cut and the tail stays in the writer for the next call; with `last`, the final
 * packet carries EOM. Returns one buffer holding all the packets, ready for one socket write.
 */
export function cutPackets(w: ByteWriter, packetSize: number, spid: number, nextId: () => number, last: boolean): Buffer | undefined {
  const payload = packetSize - HEADER;
  const count = last ? Math.max(1, Math.ceil(w.pos / payload)) : Math.floor(w.pos / payload);
  if (count === 0) return undefined;
  const bytes = last ? w.pos : count * payload;
  const out = Buffer.allocUnsafe(bytes + count * HEADER);
  let src = 0;
  let dst = 0;
  for (let i = 0; i < count; i++) {
    const n = Math.min(payload, bytes - src);
    out[dst] = PKT.TABULAR;
    out[dst + 1] = last && i === count - 1 ? STATUS_EOM : 0;
    out.writeUInt16BE(n + HEADER, dst + 2);
    out.writeUInt16BE(spid, dst + 4);
    out[dst + 6] = nextId();
    out[dst + 7] = 0;
    w.buf.copy(out, dst + HEADER, src, src + n);
    src += n;
    dst += n + HEADER;
  }
  w.buf.copyWithin(0, bytes, w.pos);
  w.pos -= bytes;
  return out;
}
