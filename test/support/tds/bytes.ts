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

/** A little-endian byte builder that grows by doubling; writes go straight into one buffer. */
export class ByteWriter {
  buf: Buffer;
  pos = 0;

  constructor(initial = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u8(v: number): void {
    this.ensure(1);
    this.buf[this.pos++] = v;
  }
  u16(v: number): void {
    this.ensure(2);
    this.pos = this.buf.writeUInt16LE(v, this.pos);
  }
  u32(v: number): void {
    this.ensure(4);
    this.pos = this.buf.writeUInt32LE(v >>> 0, this.pos);
  }
  i32(v: number): void {
    this.ensure(4);
    this.pos = this.buf.writeInt32LE(v, this.pos);
  }
  i64(v: bigint): void {
    this.ensure(8);
    this.pos = this.buf.writeBigInt64LE(v, this.pos);
  }
  /** A non-negative integer below 2^53 as 8 bytes. */
  u64n(v: number): void {
    this.ensure(8);
    this.buf.writeUInt32LE(v % 0x100000000, this.pos);
    this.buf.writeUInt32LE(Math.floor(v / 0x100000000), this.pos + 4);
    this.pos += 8;
  }
  f64(v: number): void {
    this.ensure(8);
    this.pos = this.buf.writeDoubleLE(v, this.pos);
  }
  f32(v: number): void {
    this.ensure(4);
    this.pos = this.buf.writeFloatLE(v, this.pos);
  }
  /** An unsigned integer of `bytes` bytes (3 or 5 for time and date parts). */
  uintN(v: number, bytes: number): void {
    this.ensure(bytes);
    this.pos = this.buf.writeUIntLE(v, this.pos, bytes);
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  /** UCS-2 text without a length (2 bytes per UTF-16 code unit). */
  ucs2(s: string): void {
    this.ensure(s.length * 2);
    this.pos += this.buf.write(s, this.pos, s.length * 2, 'ucs2');
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

const cp1252 = new TextDecoder('windows-1252');
export function decodeCp1252(b: Uint8Array): string {
  return cp1252.decode(b);
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
