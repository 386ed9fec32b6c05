/**
 * Column types on the wire (MS-TDS 2.2.5.4 data type definitions, 2.2.5.5 data type
 * dependent data streams, 2.2.5.6 TYPE_INFO): the TYPE_INFO a column declares in COLMETADATA
 * and the bytes of its values in ROW/NBCROW, plus the date, decimal and GUID arithmetic shared
 * with parameter decoding. Each column gets one encoder closure, chosen once per result set.
 */
import { ByteWriter, encodeCp1252 } from './bytes.js';
import type { ColumnDef, SqlType, SqlValue } from './types.js';

/** SQL_Latin1_General_CP1_CI_AS: LCID 0x0409, case/kana/width-insensitive, sort id 52 (code page 1252). */
export const COLLATION = Buffer.from([0x09, 0x04, 0xd0, 0x00, 0x34]);

/** TYPE_INFO type ids (MS-TDS 2.2.5.4). */
export const T = {
  INT1: 0x30, BIT: 0x32, INT2: 0x34, INT4: 0x38, DATETIME: 0x3d, FLT4: 0x3b, MONEY: 0x3c, FLT8: 0x3e, INT8: 0x7f,
  GUID: 0x24, INTN: 0x26, DATE: 0x28, TIME: 0x29, DATETIME2: 0x2a, DATETIMEOFFSET: 0x2b,
  BITN: 0x68, DECIMALN: 0x6a, NUMERICN: 0x6c, FLTN: 0x6d, MONEYN: 0x6e, DATETIMN: 0x6f,
  BIGVARBIN: 0xa5, BIGVARCHR: 0xa7, BIGBINARY: 0xad, BIGCHAR: 0xaf, NVARCHAR: 0xe7, NCHAR: 0xef,
} as const;

export const PLP_NULL = 0xffff_ffff_ffff_ffffn;
const MS_PER_DAY = 86_400_000;
/** Days from 0001-01-01 (date, datetime2) and from 1900-01-01 (datetime) to 1970-01-01. */
const DAYS_0001_TO_1970 = 719_162;
const DAYS_1900_TO_1970 = 25_567;

export type Encoder = (w: ByteWriter, v: SqlValue) => void;

export function dateParts(d: Date): { days: number; msOfDay: number } {
  const ms = d.getTime();
  if (Number.isNaN(ms)) throw new TypeError('invalid Date');
  const day = Math.floor(ms / MS_PER_DAY);
  return { days: day, msOfDay: ms - day * MS_PER_DAY };
}

/** Bytes of the time part for a fractional-second scale (MS-TDS 2.2.5.5.1.8). */
export const timeBytes = (scale: number) => (scale <= 2 ? 3 : scale <= 4 ? 4 : 5);

/** Time-of-day units (10^-scale s) to milliseconds, and back. */
export const unitsToMs = (units: number, scale: number) => units / 10 ** (scale - 3);
const msToUnits = (ms: number, scale: number) => Math.round(ms * 10 ** (scale - 3));

export const dateFromDays0001 = (days: number, msOfDay = 0) => new Date((days - DAYS_0001_TO_1970) * MS_PER_DAY + msOfDay);
export const dateFromDays1900 = (days: number, msOfDay: number) => new Date((days - DAYS_1900_TO_1970) * MS_PER_DAY + msOfDay);

/** GUID text <-> the mixed-endian 16 bytes SQL Server stores (first three groups little-endian). */
const GUID_ORDER = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
export function guidToBytes(s: string): Buffer {
  const hex = Buffer.from(s.replace(/[{}-]/g, ''), 'hex');
  if (hex.length !== 16) throw new TypeError(`not a uniqueidentifier: ${s}`);
  const out = Buffer.allocUnsafe(16);
  for (let i = 0; i < 16; i++) out[i] = hex[GUID_ORDER[i]!]!;
  return out;
}
export function guidFromBytes(b: Buffer): string {
  const h = GUID_ORDER.map((i) => b[i]!.toString(16).padStart(2, '0')).join('').toUpperCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Exact decimal text (or a number) scaled to an integer: '-12.5' at scale 2 -> -1250n. */
export function scaledInteger(v: SqlValue, scale: number): bigint {
  const text = typeof v === 'number' ? v.toFixed(scale) : String(v);
  const m = /^([+-]?)(\d*)(?:\.(\d*))?$/.exec(text.trim());
  if (m === null) throw new TypeError(`not a decimal: ${text}`);
  const frac = (m[3] ?? '').padEnd(scale, '0');
  if (frac.length > scale && /[1-9]/.test(frac.slice(scale))) throw new TypeError(`${text} has more than ${scale} decimal places`);
  const n = BigInt((m[2] || '0') + frac.slice(0, scale));
  return m[1] === '-' ? -n : n;
}
/** The inverse: -1250n at scale 2 -> '-12.50'. */
export function decimalText(n: bigint, scale: number): string {
  const neg = n < 0n;
  const digits = (neg ? -n : n).toString().padStart(scale + 1, '0');
  const text = scale === 0 ? digits : `${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
  return neg ? `-${text}` : text;
}
export const decimalBytes = (precision: number) => (precision <= 9 ? 5 : precision <= 19 ? 9 : precision <= 28 ? 13 : 17);

const isMax = (t: SqlType) => t.length === 'max';
/** bigint values: a number or short decimal text goes without BigInt, anything else through it. */
function writeInt64(w: ByteWriter, v: SqlValue): void {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return w.i64n(v);
  if (typeof v === 'string' && v.length < 16 && /^-?\d+$/.test(v)) return w.i64n(Number(v));
  w.i64(typeof v === 'bigint' ? v : BigInt(typeof v === 'boolean' ? Number(v) : (v as number | string)));
}
const num = (v: SqlValue) => (typeof v === 'boolean' ? Number(v) : Number(v));

function writePlp(w: ByteWriter, b: Uint8Array): void {
  w.i64n(b.length);
  if (b.length > 0) {
    w.u32(b.length);
    w.bytes(b);
  }
  w.u32(0);
}

function textBytes(t: SqlType, v: SqlValue): Buffer {
  const s = typeof v === 'string' ? v : String(v);
  const wide = t.name === 'nvarchar' || t.name === 'nchar';
  const padded = (t.name === 'nchar' || t.name === 'char') && typeof t.length === 'number' ? s.padEnd(t.length, ' ') : s;
  return wide ? Buffer.from(padded, 'ucs2') : encodeCp1252(padded);
}

function binaryBytes(t: SqlType, v: SqlValue): Buffer {
  if (!Buffer.isBuffer(v)) throw new TypeError(`${t.name} value must be a Buffer`);
  if (t.name === 'binary' && typeof t.length === 'number' && v.length < t.length) return Buffer.concat([v, Buffer.alloc(t.length - v.length)]);
  return v;
}

/** A value longer than its column declares: SQL Server never sends one, so the backend has a bug. */
const tooLong = (col: ColumnDef, n: number) =>
  new TypeError(`column ${col.name}: a value of length ${n} does not fit ${col.type.name}(${String(col.type.length)})`);

/** A USHORT-length value (non-max text and binary), checked against the declared length. */
function sized(col: ColumnDef, bytesOf: (v: SqlValue) => Buffer, maxBytes: number): Encoder {
  const wide = col.type.name === 'nchar';
  return (w, v) => {
    if (v === null) return w.u16(0xffff);
    const b = bytesOf(v);
    if (b.length > maxBytes) throw tooLong(col, wide ? b.length / 2 : b.length);
    w.u16(b.length);
    w.bytes(b);
  };
}

/** TYPE_INFO for a column (COLMETADATA) or a RETURNVALUE. */
export function writeTypeInfo(w: ByteWriter, t: SqlType, nullable: boolean): void {
  const scale = t.scale ?? 7;
  switch (t.name) {
    case 'bit': return nullable ? (w.u8(T.BITN), w.u8(1)) : w.u8(T.BIT);
    case 'tinyint': return nullable ? (w.u8(T.INTN), w.u8(1)) : w.u8(T.INT1);
    case 'smallint': return nullable ? (w.u8(T.INTN), w.u8(2)) : w.u8(T.INT2);
    case 'int': return nullable ? (w.u8(T.INTN), w.u8(4)) : w.u8(T.INT4);
    case 'bigint': return nullable ? (w.u8(T.INTN), w.u8(8)) : w.u8(T.INT8);
    case 'float': return nullable ? (w.u8(T.FLTN), w.u8(8)) : w.u8(T.FLT8);
    case 'real': return nullable ? (w.u8(T.FLTN), w.u8(4)) : w.u8(T.FLT4);
    case 'money': return nullable ? (w.u8(T.MONEYN), w.u8(8)) : w.u8(T.MONEY);
    case 'datetime': return nullable ? (w.u8(T.DATETIMN), w.u8(8)) : w.u8(T.DATETIME);
    case 'uniqueidentifier': return (w.u8(T.GUID), w.u8(16));
    case 'date': return w.u8(T.DATE);
    case 'time': return (w.u8(T.TIME), w.u8(scale));
    case 'datetime2': return (w.u8(T.DATETIME2), w.u8(scale));
    case 'datetimeoffset': return (w.u8(T.DATETIMEOFFSET), w.u8(scale));
    case 'decimal':
    case 'numeric': {
      const precision = t.precision ?? 18;
      w.u8(t.name === 'decimal' ? T.DECIMALN : T.NUMERICN);
      w.u8(decimalBytes(precision));
      w.u8(precision);
      return w.u8(t.scale ?? 0);
    }
    case 'nvarchar':
    case 'nchar':
    case 'varchar':
    case 'char': {
      const wide = t.name === 'nvarchar' || t.name === 'nchar';
      w.u8({ nvarchar: T.NVARCHAR, nchar: T.NCHAR, varchar: T.BIGVARCHR, char: T.BIGCHAR }[t.name]);
      const length = isMax(t) ? 0xffff : ((t.length as number | undefined) ?? (wide ? 4000 : 8000)) * (wide ? 2 : 1);
      w.u16(length);
      return w.bytes(COLLATION);
    }
    case 'varbinary':
    case 'binary':
      w.u8(t.name === 'varbinary' ? T.BIGVARBIN : T.BIGBINARY);
      return w.u16(isMax(t) ? 0xffff : ((t.length as number | undefined) ?? 8000));
  }
}

/** The value encoder of a column: writes one non-null or null value as TYPE_VARBYTE. */
export function encoderFor(col: ColumnDef): Encoder {
  const t = col.type;
  const nullable = col.nullable ?? true;
  const scale = t.scale ?? 7;
  // Fixed-length types carry no length byte and cannot be null; their N forms prefix a length.
  const fixed = (bytes: number, body: Encoder): Encoder =>
    nullable
      ? (w, v) => (v === null ? w.u8(0) : (w.u8(bytes), body(w, v)))
      : (w, v) => {
          if (v === null) throw new TypeError(`column ${col.name} is NOT NULL but the row has null`);
          body(w, v);
        };
  const nullByte = (body: Encoder): Encoder => (w, v) => (v === null ? w.u8(0) : body(w, v));
  switch (t.name) {
    case 'bit': return fixed(1, (w, v) => w.u8(v ? 1 : 0));
    case 'tinyint': return fixed(1, (w, v) => w.u8(num(v)));
    case 'smallint': return fixed(2, (w, v) => w.u16(num(v)));
    case 'int': return fixed(4, (w, v) => w.i32(num(v)));
    case 'bigint': return fixed(8, writeInt64);
    case 'float': return fixed(8, (w, v) => w.f64(num(v)));
    case 'real': return fixed(4, (w, v) => w.f32(num(v)));
    case 'money': return fixed(8, (w, v) => {
      const n = BigInt.asUintN(64, scaledInteger(v, 4));
      w.u32(Number(n >> 32n));
      w.u32(Number(n & 0xffff_ffffn));
    });
    case 'datetime': return fixed(8, (w, v) => {
      const { days, msOfDay } = dateParts(v as Date);
      let ticks = Math.round((msOfDay * 3) / 10);
      let d = days + DAYS_1900_TO_1970;
      if (ticks >= 25_920_000) (ticks = 0), d++;
      w.i32(d);
      w.u32(ticks);
    });
    case 'uniqueidentifier': return nullByte((w, v) => (w.u8(16), w.bytes(guidToBytes(String(v)))));
    case 'date': return nullByte((w, v) => (w.u8(3), w.uintN(dateParts(v as Date).days + DAYS_0001_TO_1970, 3)));
    case 'time': return nullByte((w, v) => {
      w.u8(timeBytes(scale));
      w.uintN(msToUnits(dateParts(v as Date).msOfDay, scale), timeBytes(scale));
    });
    case 'datetime2':
    case 'datetimeoffset': {
      const tb = timeBytes(scale);
      const offset = t.name === 'datetimeoffset' ? 2 : 0;
      const dayUnits = 86_400 * 10 ** scale;
      const unitsPerMs = 10 ** (scale - 3);
      return nullByte((w, v) => {
        const ms = (v as Date).getTime();
        if (Number.isNaN(ms)) throw new TypeError(`column ${col.name}: invalid Date`);
        const day = Math.floor(ms / MS_PER_DAY);
        let units = Math.round((ms - day * MS_PER_DAY) * unitsPerMs);
        let d = day + DAYS_0001_TO_1970;
        if (units >= dayUnits) (units -= dayUnits), d++;
        w.u8(tb + 3 + offset);
        w.uintN(units, tb);
        w.uintN(d, 3);
        if (offset) w.u16(0);
      });
    }
    case 'decimal':
    case 'numeric': {
      const len = decimalBytes(t.precision ?? 18);
      return nullByte((w, v) => {
        const n = scaledInteger(v, t.scale ?? 0);
        let mag = n < 0n ? -n : n;
        w.u8(len);
        w.u8(n < 0n ? 0 : 1);
        for (let i = 1; i < len; i += 4) {
          w.u32(Number(mag & 0xffff_ffffn));
          mag >>= 32n;
        }
      });
    }
    case 'nvarchar':
    case 'nchar':
    case 'varchar':
    case 'char':
      if (isMax(t)) return (w, v) => (v === null ? w.i64(-1n) : writePlp(w, textBytes(t, v)));
      if (t.name === 'nvarchar') {
        // The hot path: UCS-2 straight into the writer, no intermediate buffer.
        const chars = (t.length as number | undefined) ?? 4000;
        return (w, v) => {
          if (v === null) return w.u16(0xffff);
          const s = typeof v === 'string' ? v : String(v);
          if (s.length > chars) throw tooLong(col, s.length);
          w.u16(s.length * 2);
          w.ucs2(s);
        };
      }
      if (t.name === 'varchar') {
        // Also without an intermediate buffer: one byte per character in code page 1252.
        const chars = (t.length as number | undefined) ?? 8000;
        return (w, v) => {
          if (v === null) return w.u16(0xffff);
          const s = typeof v === 'string' ? v : String(v);
          if (s.length > chars) throw tooLong(col, s.length);
          w.u16(s.length);
          w.cp1252(s);
        };
      }
      return sized(col, (v) => textBytes(t, v), ((t.length as number | undefined) ?? (t.name === 'nchar' ? 4000 : 8000)) * (t.name === 'nchar' ? 2 : 1));
    case 'varbinary':
    case 'binary':
      if (isMax(t)) return (w, v) => (v === null ? w.i64(-1n) : writePlp(w, binaryBytes(t, v)));
      return sized(col, (v) => binaryBytes(t, v), (t.length as number | undefined) ?? 8000);
  }
}
