/**
 * Server token streams (MS-TDS 2.2.7): LOGINACK, ENVCHANGE, ERROR/INFO, DONE/DONEPROC/DONEINPROC,
 * RETURNSTATUS, COLMETADATA and ROW/NBCROW, written into a ByteWriter. A result set is prepared
 * once (its COLMETADATA and one encoder per column) and then encodes rows without allocating.
 */
import type { ByteWriter } from './bytes.js';
import type { ColumnDef, SqlValue } from './types.js';
import { COLLATION, encoderFor, writeTypeInfo, type Encoder } from './values.js';

export const TOKEN = {
  COLMETADATA: 0x81,
  RETURNSTATUS: 0x79,
  ERROR: 0xaa,
  INFO: 0xab,
  LOGINACK: 0xad,
  ROW: 0xd1,
  NBCROW: 0xd2,
  ENVCHANGE: 0xe3,
  DONE: 0xfd,
  DONEPROC: 0xfe,
  DONEINPROC: 0xff,
} as const;

/** DONE status bits (MS-TDS 2.2.7.6). */
export const DONE = { FINAL: 0x00, MORE: 0x01, ERROR: 0x02, INXACT: 0x04, COUNT: 0x10, ATTN: 0x20, SRVERROR: 0x100 } as const;
/** CurCmd values SQL Server puts in DONE tokens. */
export const CURCMD = { NONE: 0x00, SELECT: 0xc1, INSERT: 0xc3, DELETE: 0xc4, UPDATE: 0xc5, EXECUTE: 0xe0 } as const;

/** ENVCHANGE types (MS-TDS 2.2.7.9). */
export const ENV = { DATABASE: 1, LANGUAGE: 2, PACKET_SIZE: 4, COLLATION: 7 } as const;

/** TDS 7.4, as LOGINACK carries it (big-endian on the wire). */
export const TDS_7_4 = 0x74000004;
export const SERVER_NAME = 'dstream-tds';
/** The product version the server claims: SQL Server 2022 (16.0.1000). */
export const PRODUCT_VERSION = { major: 16, minor: 0, build: 1000 } as const;

export function loginAck(w: ByteWriter): void {
  const prog = 'Microsoft SQL Server';
  w.u8(TOKEN.LOGINACK);
  w.u16(1 + 4 + 1 + prog.length * 2 + 4);
  w.u8(1); // SQL_TSQL
  w.ensure(4);
  w.pos = w.buf.writeUInt32BE(TDS_7_4, w.pos);
  w.bVarchar(prog);
  w.u8(PRODUCT_VERSION.major);
  w.u8(PRODUCT_VERSION.minor);
  w.u8(PRODUCT_VERSION.build >> 8);
  w.u8(PRODUCT_VERSION.build & 0xff);
}

/** ENVCHANGE with B_VARCHAR new and old values (database, language, packet size). */
export function envChange(w: ByteWriter, type: number, next: string, prev: string): void {
  w.u8(TOKEN.ENVCHANGE);
  w.u16(1 + 1 + next.length * 2 + 1 + prev.length * 2);
  w.u8(type);
  w.bVarchar(next);
  w.bVarchar(prev);
}

/** ENVCHANGE type 7: the SQL collation as B_VARBYTE, no old value. */
export function collationChange(w: ByteWriter): void {
  w.u8(TOKEN.ENVCHANGE);
  w.u16(1 + 1 + COLLATION.length + 1);
  w.u8(ENV.COLLATION);
  w.u8(COLLATION.length);
  w.bytes(COLLATION);
  w.u8(0);
}

export interface ServerMessage {
  number: number;
  state: number;
  severity: number;
  message: string;
  procName?: string;
  lineNumber?: number;
}

/** ERROR (class > 10) or INFO token (MS-TDS 2.2.7.10, 2.2.7.13). */
export function message(w: ByteWriter, token: typeof TOKEN.ERROR | typeof TOKEN.INFO, m: ServerMessage): void {
  const proc = m.procName ?? '';
  w.u8(token);
  w.u16(4 + 1 + 1 + 2 + m.message.length * 2 + 1 + SERVER_NAME.length * 2 + 1 + proc.length * 2 + 4);
  w.i32(m.number);
  w.u8(m.state);
  w.u8(m.severity);
  w.usVarchar(m.message);
  w.bVarchar(SERVER_NAME);
  w.bVarchar(proc);
  w.i32(m.lineNumber ?? 1);
}

export function done(w: ByteWriter, token: number, status: number, curCmd: number, rowCount: number): void {
  w.u8(token);
  w.u16(status);
  w.u16(curCmd);
  w.i64n(rowCount);
}

export function returnStatus(w: ByteWriter, value: number): void {
  w.u8(TOKEN.RETURNSTATUS);
  w.i32(value);
}

/** A result set ready to stream: COLMETADATA written once, then rows. */
export class ResultSet {
  private readonly encoders: Encoder[];
  private readonly bitmapBytes: number;

  constructor(readonly columns: ColumnDef[]) {
    if (columns.length === 0) throw new TypeError('a result set needs at least one column');
    this.encoders = columns.map(encoderFor);
    this.bitmapBytes = Math.ceil(columns.length / 8);
  }

  writeMetadata(w: ByteWriter): void {
    w.u8(TOKEN.COLMETADATA);
    w.u16(this.columns.length);
    for (const c of this.columns) {
      const nullable = c.nullable ?? true;
      w.u32(0); // UserType
      w.u16(nullable ? 0x01 : 0x00); // Flags: fNullable
      writeTypeInfo(w, c.type, nullable);
      w.bVarchar(c.name);
    }
  }

  /**
   * ROW, or NBCROW when the row has a null (its null bitmap replaces the null values). A value that
   * cannot be encoded throws with nothing of the row left in the writer, so an ERROR can follow.
   */
  writeRow(w: ByteWriter, row: SqlValue[]): void {
    const start = w.pos;
    try {
      this.encodeRow(w, row);
    } catch (err) {
      w.pos = start;
      throw err;
    }
  }

  private encodeRow(w: ByteWriter, row: SqlValue[]): void {
    const enc = this.encoders;
    const n = enc.length;
    if (row.length !== n) throw new TypeError(`row has ${row.length} values for ${n} columns`);
    let hasNull = false;
    for (let i = 0; i < n; i++) if (row[i] === null || row[i] === undefined) (hasNull = true);
    if (!hasNull) {
      w.u8(TOKEN.ROW);
      for (let i = 0; i < n; i++) enc[i]!(w, row[i]!);
      return;
    }
    w.u8(TOKEN.NBCROW);
    const at = w.skip(this.bitmapBytes);
    w.buf.fill(0, at, at + this.bitmapBytes);
    for (let i = 0; i < n; i++) {
      const v = row[i];
      if (v === null || v === undefined) {
        if (this.columns[i]!.nullable === false) throw new TypeError(`column ${this.columns[i]!.name} is NOT NULL but the row has null`);
        w.buf[at + (i >> 3)]! |= 1 << (i & 7);
      } else enc[i]!(w, v);
    }
  }
}
