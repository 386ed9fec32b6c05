/**
 * How SQL Server values become JSON. Each column type belongs to a class; the class decides the
 * expression dstream selects (sql.ts: exact numbers and dates are converted to text by SQL Server
 * itself, so nothing passes through a JavaScript double or Date) and how the driver's value is
 * written into the envelope (here). docs/sql-server.md has the table.
 */

export type TypeClass =
  | 'number' // tinyint smallint int real float: JSON number
  | 'bigint' // bigint: string (a double holds 53 bits)
  | 'decimal' // decimal numeric money smallmoney: string, exact, scale kept
  | 'boolean' // bit
  | 'string' // char varchar nchar nvarchar text ntext sysname xml
  | 'guid' // uniqueidentifier: string
  | 'date' // date: YYYY-MM-DD
  | 'datetime' // datetime datetime2 smalldatetime: ISO 8601 without offset, as stored
  | 'datetimeoffset' // ISO 8601 with offset
  | 'time' // hh:mm:ss[.fffffff]
  | 'binary' // binary varbinary image timestamp rowversion: base64
  | 'spatial' // geography geometry: WKT
  | 'hierarchyid' // /1/2/
  | 'variant' // sql_variant: its text form
  | 'other'; // anything else: its text form

const CLASSES: Record<string, TypeClass> = {
  tinyint: 'number',
  smallint: 'number',
  int: 'number',
  real: 'number',
  float: 'number',
  bigint: 'bigint',
  decimal: 'decimal',
  numeric: 'decimal',
  money: 'decimal',
  smallmoney: 'decimal',
  bit: 'boolean',
  char: 'string',
  varchar: 'string',
  nchar: 'string',
  nvarchar: 'string',
  text: 'string',
  ntext: 'string',
  sysname: 'string',
  xml: 'string',
  uniqueidentifier: 'guid',
  date: 'date',
  datetime: 'datetime',
  datetime2: 'datetime',
  smalldatetime: 'datetime',
  datetimeoffset: 'datetimeoffset',
  time: 'time',
  binary: 'binary',
  varbinary: 'binary',
  image: 'binary',
  timestamp: 'binary',
  rowversion: 'binary',
  geography: 'spatial',
  geometry: 'spatial',
  hierarchyid: 'hierarchyid',
  sql_variant: 'variant',
};

export function typeClassOf(sqlType: string): TypeClass {
  return CLASSES[sqlType.toLowerCase()] ?? 'other';
}

export interface ColumnInfo {
  name: string;
  /** The SQL Server type name, as in cdc.captured_columns.column_type (`int`, `decimal`, ...). */
  type: string;
  /** cdc.captured_columns.column_ordinal: the column's bit in __$update_mask. */
  ordinal?: number;
  /** A (max) type: varchar(max), nvarchar(max), varbinary(max). */
  max?: boolean;
}

/**
 * A driver value in its JSON form. Strings, numbers, booleans and null pass as they are; bytes
 * become base64; a Date (a driver configured to return them) becomes ISO 8601; a bigint a string.
 */
export function jsonValue(value: unknown): unknown {
  if (value === null || value === undefined) return null;
  switch (typeof value) {
    case 'string':
    case 'number':
    case 'boolean':
      return value;
    case 'bigint':
      return value.toString();
    default:
      if (Buffer.isBuffer(value)) return value.toString('base64');
      if (value instanceof Uint8Array) return Buffer.from(value).toString('base64');
      if (value instanceof Date) return value.toISOString();
      return String(value);
  }
}

/** jsonValue with the common cases inline: most values are strings, numbers or null. */
const json = (v: unknown): unknown => (v === null || v === undefined ? null : typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? v : jsonValue(v));

/** A function building a row's `data` object from a driver row by column name, columns in capture order. */
export function rowMapper(columns: readonly ColumnInfo[]): (row: Record<string, unknown>) => Record<string, unknown> {
  const names = columns.map((c) => c.name);
  return (row) => {
    const data: Record<string, unknown> = {};
    for (let i = 0; i < names.length; i++) data[names[i]!] = json(row[names[i]!]);
    return data;
  };
}

/**
 * The same from a row of values, the columns' from index `first` on (a ChangeRow: sql.ts
 * changeLayout). It runs once per change row: built as one object literal of the capture
 * instance's columns, so each row's object is allocated whole in its final shape, instead of
 * growing by a store per column whose key changes at every step. The names are written as JSON
 * string literals; `__proto__`, which a literal (or a store) would take for the prototype, is
 * defined as a property of its own.
 */
export function valuesMapper(columns: readonly ColumnInfo[], first: number): (row: readonly unknown[]) => Record<string, unknown> {
  const names = columns.map((c) => c.name);
  if (!names.includes('__proto__')) {
    const fields = names.map((name, i) => `${JSON.stringify(name)}: json(row[${first + i}])`);
    return new Function('json', `return (row) => ({ ${fields.join(', ')} });`)(json) as (row: readonly unknown[]) => Record<string, unknown>;
  }
  return (row) => {
    const data: Record<string, unknown> = {};
    for (let i = 0; i < names.length; i++) Object.defineProperty(data, names[i]!, { value: json(row[first + i]), enumerable: true, writable: true, configurable: true });
    return data;
  };
}

/** text, ntext, image: CDC gives NULL for them in deletes and before-images. */
const LOB_TYPES = new Set(['text', 'ntext', 'image']);

/** Whether bit `ordinal` is set in an __$update_mask (as sys.fn_cdc_is_bit_set numbers them: from the last byte). */
export function updateMaskHas(mask: Uint8Array, ordinal: number): boolean {
  const byte = mask[mask.length - 1 - Math.floor((ordinal - 1) / 8)];
  return byte !== undefined && (byte & (1 << ((ordinal - 1) % 8))) !== 0;
}

/**
 * For a capture instance's columns, a function naming the columns of a change row whose value CDC
 * does not give (their NULL is not the row's value): text, ntext and image in deletes (1) and
 * before-images (3); varchar(max), nvarchar(max), varbinary(max) in before-images unless the update
 * changed them (their bit in __$update_mask). Undefined when no column can be unavailable.
 */
export function unavailableColumns(columns: readonly ColumnInfo[]): ((op: number, mask: Uint8Array | null | undefined) => string[] | undefined) | undefined {
  const lobs = columns.filter((c) => LOB_TYPES.has(c.type.toLowerCase())).map((c) => c.name);
  const max = columns.filter((c) => c.max === true);
  if (lobs.length === 0 && max.length === 0) return undefined;
  return (op, mask) => {
    if (op !== 1 && op !== 3) return undefined;
    const out = [...lobs];
    if (op === 3) {
      for (const c of max) if (mask == null || c.ordinal === undefined || !updateMaskHas(mask, c.ordinal)) out.push(c.name);
    }
    return out.length > 0 ? out : undefined;
  };
}
