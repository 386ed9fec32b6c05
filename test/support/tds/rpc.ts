/**
 * Client requests (MS-TDS 2.2.6.7 SQL_BATCH, 2.2.6.6 RPC request, 2.2.5.3 ALL_HEADERS): the text
 * of a batch, and an RPC call decoded into its statement and typed parameters. sp_executesql comes
 * by ProcID 10 or by name; any other procedure called by name becomes the T-SQL that does the same
 * (`EXEC name @p = @p, ...`), so the backend only ever sees T-SQL.
 */
import { ByteReader, decodeCp1252 } from './bytes.js';
import { SqlServerError, type Param, type SqlType, type SqlValue } from './types.js';
import {
  T, dateFromDays0001, dateFromDays1900, decimalText, guidFromBytes, timeBytes, unitsToMs,
} from './values.js';

/** ProcIDs of the special stored procedures (MS-TDS 2.2.6.6). */
const PROC = { SP_EXECUTESQL: 10 } as const;
const STATUS_BY_REF = 0x01;

function skipAllHeaders(r: ByteReader): void {
  const total = r.u32();
  if (total < 4) throw new RangeError(`ALL_HEADERS length ${total} is shorter than itself`);
  r.take(total - 4);
}

export function parseBatch(msg: Buffer): string {
  const r = new ByteReader(msg);
  skipAllHeaders(r);
  return r.ucs2(r.remaining >> 1);
}

export interface RpcCall {
  /** The procedure as called: 'sp_executesql' for ProcID 10, else its name. */
  procName: string;
  sql: string;
  params: Param[];
}

export function parseRpc(msg: Buffer): RpcCall {
  const r = new ByteReader(msg);
  skipAllHeaders(r);
  const nameLength = r.u16();
  let procName: string;
  if (nameLength === 0xffff) {
    const id = r.u16();
    if (id !== PROC.SP_EXECUTESQL) throw new SqlServerError(2812, `Could not find stored procedure with ProcID ${id}.`, 16, 62);
    procName = 'sp_executesql';
  } else procName = r.ucs2(nameLength);
  r.u16(); // OptionFlags (recompile, no metadata): nothing to do for a test server
  const params: Param[] = [];
  while (r.remaining > 0) params.push(readParam(r));

  if (/^(?:(?:\[?sys\]?|\[?dbo\]?)\.)?\[?sp_executesql\]?$/i.test(procName)) {
    const [statement, declarations, ...rest] = params;
    if (statement === undefined || typeof statement.value !== 'string') {
      throw new SqlServerError(214, "Procedure expects parameter '@statement' of type 'ntext/nchar/nvarchar'.", 16, 2);
    }
    if (declarations !== undefined && declarations.value !== null && typeof declarations.value !== 'string') {
      throw new SqlServerError(214, "Procedure expects parameter '@params' of type 'ntext/nchar/nvarchar'.", 16, 2);
    }
    return { procName: 'sp_executesql', sql: statement.value, params: rest };
  }
  const args = params.map((p, i) => (p.name ? `@${p.name} = @${p.name}` : `@p${i}`) + (p.output ? ' OUTPUT' : ''));
  const named = params.map((p, i) => (p.name ? p : { ...p, name: `p${i}` }));
  return { procName, sql: `EXEC ${procName}${args.length ? ' ' + args.join(', ') : ''}`, params: named };
}

interface TypeInfo {
  id: number;
  type: SqlType;
  /** Bytes of the length prefix of each value: 1, 2, or 8 for PLP; 0 for fixed-length types. */
  prefix: 0 | 1 | 2 | 8;
  size: number;
}

const FIXED: Record<number, [SqlType['name'], number]> = {
  [T.INT1]: ['tinyint', 1], [T.BIT]: ['bit', 1], [T.INT2]: ['smallint', 2], [T.INT4]: ['int', 4], [T.INT8]: ['bigint', 8],
  [T.FLT4]: ['real', 4], [T.FLT8]: ['float', 8], [T.MONEY]: ['money', 8], [T.DATETIME]: ['datetime', 8],
};

function readTypeInfo(r: ByteReader): TypeInfo {
  const id = r.u8();
  const fixed = FIXED[id];
  if (fixed) return { id, type: { name: fixed[0] }, prefix: 0, size: fixed[1] };
  switch (id) {
    case T.INTN: {
      const size = r.u8();
      const name = ({ 1: 'tinyint', 2: 'smallint', 4: 'int', 8: 'bigint' } as const)[size as 1 | 2 | 4 | 8];
      if (!name) throw new RangeError(`INTN of length ${size}`);
      return { id, type: { name }, prefix: 1, size };
    }
    case T.BITN: return { id, type: { name: 'bit' }, prefix: 1, size: r.u8() };
    case T.FLTN: { const size = r.u8(); return { id, type: { name: size === 4 ? 'real' : 'float' }, prefix: 1, size }; }
    case T.MONEYN: { const size = r.u8(); if (size !== 8) throw new RangeError('smallmoney parameters are not supported'); return { id, type: { name: 'money' }, prefix: 1, size }; }
    case T.DATETIMN: { const size = r.u8(); if (size !== 8) throw new RangeError('smalldatetime parameters are not supported'); return { id, type: { name: 'datetime' }, prefix: 1, size }; }
    case T.GUID: return { id, type: { name: 'uniqueidentifier' }, prefix: 1, size: r.u8() };
    case T.DATE: return { id, type: { name: 'date' }, prefix: 1, size: 3 };
    case T.TIME: return { id, type: { name: 'time', scale: r.u8() }, prefix: 1, size: 0 };
    case T.DATETIME2: return { id, type: { name: 'datetime2', scale: r.u8() }, prefix: 1, size: 0 };
    case T.DATETIMEOFFSET: return { id, type: { name: 'datetimeoffset', scale: r.u8() }, prefix: 1, size: 0 };
    case T.DECIMALN:
    case T.NUMERICN: {
      const size = r.u8();
      const precision = r.u8();
      const scale = r.u8();
      return { id, type: { name: id === T.DECIMALN ? 'decimal' : 'numeric', precision, scale }, prefix: 1, size };
    }
    case T.NVARCHAR:
    case T.NCHAR:
    case T.BIGVARCHR:
    case T.BIGCHAR: {
      const max = r.u16();
      r.take(5); // collation: the server reads every varchar as its own code page 1252
      const wide = id === T.NVARCHAR || id === T.NCHAR;
      const name = ({ [T.NVARCHAR]: 'nvarchar', [T.NCHAR]: 'nchar', [T.BIGVARCHR]: 'varchar', [T.BIGCHAR]: 'char' } as const)[id];
      const length = max === 0xffff ? ('max' as const) : wide ? max / 2 : max;
      return { id, type: { name, length }, prefix: max === 0xffff ? 8 : 2, size: max };
    }
    case T.BIGVARBIN:
    case T.BIGBINARY: {
      const max = r.u16();
      const length = max === 0xffff ? ('max' as const) : max;
      return { id, type: { name: id === T.BIGVARBIN ? 'varbinary' : 'binary', length }, prefix: max === 0xffff ? 8 : 2, size: max };
    }
    default:
      throw new SqlServerError(8016, `The TDS test server does not decode parameters of type 0x${id.toString(16)}.`, 16, 1);
  }
}

function readPlp(r: ByteReader): Buffer | null {
  const low = r.u32();
  const high = r.u32();
  if (low === 0xffffffff && high === 0xffffffff) return null;
  const chunks: Buffer[] = [];
  for (let n = r.u32(); n !== 0; n = r.u32()) chunks.push(r.take(n));
  return Buffer.concat(chunks);
}

function readValueBytes(r: ByteReader, ti: TypeInfo): Buffer | null {
  switch (ti.prefix) {
    case 0: return r.take(ti.size);
    case 1: { const n = r.u8(); return n === 0 ? null : r.take(n); }
    case 2: { const n = r.u16(); return n === 0xffff ? null : r.take(n); }
    case 8: return readPlp(r);
  }
}

function decodeValue(ti: TypeInfo, b: Buffer): SqlValue {
  const t = ti.type;
  switch (t.name) {
    case 'tinyint': return b.readUInt8(0);
    case 'smallint': return b.readInt16LE(0);
    case 'int': return b.readInt32LE(0);
    case 'bigint': return b.readBigInt64LE(0);
    case 'bit': return b[0] !== 0;
    case 'real': return b.readFloatLE(0);
    case 'float': return b.readDoubleLE(0);
    case 'money': return decimalText((BigInt(b.readInt32LE(0)) << 32n) | BigInt(b.readUInt32LE(4)), 4);
    case 'datetime': return dateFromDays1900(b.readInt32LE(0), Math.round((b.readUInt32LE(4) * 10) / 3));
    case 'uniqueidentifier': return guidFromBytes(b);
    case 'date': return dateFromDays0001(b.readUIntLE(0, 3));
    case 'time': return new Date(unitsToMs(b.readUIntLE(0, b.length), t.scale ?? 7));
    case 'datetime2':
    case 'datetimeoffset': {
      const tb = timeBytes(t.scale ?? 7);
      return dateFromDays0001(b.readUIntLE(tb, 3), unitsToMs(b.readUIntLE(0, tb), t.scale ?? 7));
    }
    case 'decimal':
    case 'numeric': {
      let mag = 0n;
      for (let i = b.length - 4; i >= 1; i -= 4) mag = (mag << 32n) | BigInt(b.readUInt32LE(i));
      return decimalText(b[0] === 1 ? mag : -mag, t.scale ?? 0);
    }
    case 'nvarchar':
    case 'nchar': return b.toString('ucs2');
    case 'varchar':
    case 'char': return decodeCp1252(b);
    case 'varbinary':
    case 'binary': return Buffer.from(b);
  }
}

function readParam(r: ByteReader): Param {
  const nameChars = r.u8();
  const name = r.ucs2(nameChars).replace(/^@/, '');
  const status = r.u8();
  const ti = readTypeInfo(r);
  const bytes = readValueBytes(r, ti);
  const value = bytes === null ? null : decodeValue(ti, bytes);
  const param: Param = { name, type: ti.type, value };
  if (status & STATUS_BY_REF) param.output = true;
  return param;
}
