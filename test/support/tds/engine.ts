/**
 * Runs parsed T-SQL (tsql.ts) against a Catalog: name binding, expression types as SQL Server
 * derives them (CONVERT/CAST to the named type, COUNT_BIG bigint, CASE from its branches, a
 * literal's own type), WHERE/JOIN/ORDER BY/TOP, aggregates without GROUP BY, scalar and correlated
 * subqueries, variables, IF, EXEC of procedures, MERGE and DELETE on writable tables. It knows no
 * CDC: what objects, functions and procedures exist is the catalog's (cdc-backend.ts).
 */
import { Parser, type Expr, type Select, type Source, type Statement } from './tsql.js';
import { SqlServerError, type BatchOutput, type ColumnDef, type ExecuteContext, type Param, type SqlType, type SqlValue } from './types.js';

export type Row = SqlValue[];

export interface Relation {
  columns: ColumnDef[];
  /**
   * Rows in storage order; called when the statement runs (after every name is bound). `used`: the
   * columns (by index) the statement reads; a relation may leave the others NULL.
   */
  open(used?: ReadonlySet<number>): Iterable<Row>;
  /** Column names the rows are already sorted by (ascending): ORDER BY on a prefix needs no sort. */
  orderedBy?: string[];
  /** Rows whose first `orderedBy` column lies within the bounds (a clustered index seek). */
  seek?(lo: SeekBound | undefined, hi: SeekBound | undefined, used?: ReadonlySet<number>): Iterable<Row>;
  /** The row whose first `orderedBy` column equals the value, when that column is unique (a singleton seek). */
  get?(key: SqlValue): Row | undefined;
  /**
   * The first `orderedBy` column's values of the rows within the bounds, in order, without the rows
   * (an index-only seek: the key is all the index holds); stops when `visit` returns false.
   */
  scanKeys?(lo: SeekBound | undefined, hi: SeekBound | undefined, visit: (key: SqlValue) => boolean): void;
}

/**
 * Rows pushed one at a time; `row` is valid only during the call (it may be refilled for the next),
 * so a consumer that keeps a row copies it. Returns false to stop.
 */
export type RowVisitor = (row: Row) => boolean;

/** One end of a seek range. */
export interface SeekBound {
  value: SqlValue;
  inclusive: boolean;
}

export interface WritableTable extends Relation {
  readonly name: string;
  insert(row: Row): void;
  update(match: (row: Row) => boolean, set: (row: Row) => Row): number;
  delete(match: (row: Row) => boolean): number;
}

export interface ScalarFunction {
  type: SqlType;
  call(args: SqlValue[]): SqlValue;
}

export interface Catalog {
  /** A table, view or table-valued function by its (1-3 part) name; throws 208 when there is none. */
  relation(name: string[], args: SqlValue[] | undefined, argTypes: SqlType[] | undefined): Relation;
  writable(name: string[]): WritableTable;
  /** A scalar function; throws 195/4121 when there is none. */
  scalar(name: string[], argTypes: SqlType[]): ScalarFunction;
  /** Runs a procedure; returns its return status. */
  procedure(name: string[], args: Array<{ name?: string; value: SqlValue }>): Promise<number> | number;
  createSchema(name: string): void;
  createTable(name: string[], columns: Array<ColumnDef & { defaultValue?: () => SqlValue }>, primaryKey: string[]): void;
  dropTable(name: string[], ifExists: boolean): void;
  /** Each object, function or procedure a statement names, before it runs (permissions, test hooks). */
  touch(names: string[]): Promise<void>;
}

// Type classes, asked for every converted value: sets, not arrays searched each time.
const NUMERIC_TYPES = new Set(['bit', 'tinyint', 'smallint', 'int', 'bigint', 'decimal', 'numeric', 'float', 'real', 'money']);
const TEXT_TYPES = new Set(['varchar', 'nvarchar', 'char', 'nchar']);
const DATE_TYPES = new Set(['datetime2', 'datetime', 'date', 'time', 'datetimeoffset']);
const isNum = (t: SqlType) => NUMERIC_TYPES.has(t.name);
const isText = (t: SqlType) => TEXT_TYPES.has(t.name);
const isBinary = (t: SqlType) => t.name === 'binary' || t.name === 'varbinary';
const isDate = (t: SqlType) => DATE_TYPES.has(t.name);

const COMPARISONS: Record<string, (cmp: number) => boolean> = {
  '=': (cmp) => cmp === 0,
  '<>': (cmp) => cmp !== 0,
  '<': (cmp) => cmp < 0,
  '>': (cmp) => cmp > 0,
  '<=': (cmp) => cmp <= 0,
  '>=': (cmp) => cmp >= 0,
};

/**
 * Binary comparison, byte by byte; the shorter value is padded with zeros on the right. Short
 * values (LSNs are 10 bytes) in a loop: a call of Buffer.compare costs more than the bytes.
 */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  if (a === b) return 0;
  const n = a.length < b.length ? a.length : b.length;
  if (n > 32 && a.length === b.length) return Buffer.compare(a, b);
  for (let i = 0; i < n; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x !== y) return x < y ? -1 : 1;
  }
  for (let i = n; i < a.length; i++) if (a[i] !== 0) return 1;
  for (let i = n; i < b.length; i++) if (b[i] !== 0) return -1;
  return 0;
}

const isNumeric = (v: SqlValue) => typeof v === 'number' || typeof v === 'bigint' || (typeof v === 'string' && /^-?\d+(\.\d+)?$/.test(v));

/** SQL comparison (default collation: case-insensitive, trailing spaces ignored); null when either side is NULL. */
export function compare(a: SqlValue, b: SqlValue): number | null {
  if (a === null || b === null) return null;
  if (typeof a === 'number' && typeof b === 'number' && Number.isSafeInteger(a) && Number.isSafeInteger(b)) return a - b;
  if (Buffer.isBuffer(a) && Buffer.isBuffer(b)) return compareBytes(a, b);
  if (a instanceof Date && b instanceof Date) return a.getTime() - b.getTime();
  if (typeof a === 'boolean') a = a ? 1 : 0;
  if (typeof b === 'boolean') b = b ? 1 : 0;
  if ((typeof a === 'number' || typeof a === 'bigint' || typeof b === 'number' || typeof b === 'bigint') && isNumeric(a) && isNumeric(b)) {
    const x = Number(a);
    const y = Number(b);
    if (Number.isSafeInteger(x) && Number.isSafeInteger(y)) return x - y;
    const bx = BigInt(String(a).split('.')[0]!);
    const by = BigInt(String(b).split('.')[0]!);
    return bx === by ? x - y : bx < by ? -1 : 1;
  }
  const sa = String(a).replace(/ +$/, '').toLowerCase();
  const sb = String(b).replace(/ +$/, '').toLowerCase();
  return sa < sb ? -1 : sa > sb ? 1 : 0;
}

const TWO_DIGITS = Array.from({ length: 100 }, (_, i) => String(i).padStart(2, '0'));
const THREE_DIGITS = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, '0'));

/** 'yyyy-mm-dd' by day number since 1970: the dates a model's commits fall on are few. */
const DATE_TEXT = new Map<number, string>();

/** The calendar date of a day number since 1970 as 'yyyy-mm-dd' (days to civil date as in H. Hinnant's algorithm). */
function dayText(days: number): string {
  let text = DATE_TEXT.get(days);
  if (text !== undefined) return text;
  const p = utcParts(days * 86_400_000);
  // Years before 1000 with their leading zeros, as SQL Server writes them (0001-01-01).
  text = `${String(p.year).padStart(4, '0')}-${TWO_DIGITS[p.month]}-${TWO_DIGITS[p.day]}`;
  if (DATE_TEXT.size < 100_000) DATE_TEXT.set(days, text);
  return text;
}

/**
 * The UTC calendar parts of a time: one division chain instead of a getUTC* call per part.
 */
function utcParts(t: number): { year: number; month: number; day: number; hour: number; minute: number; second: number; ms: number } {
  const days = Math.floor(t / 86_400_000);
  let rest = t - days * 86_400_000;
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  const year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  const ms = rest % 1000;
  rest = (rest - ms) / 1000;
  const second = rest % 60;
  rest = (rest - second) / 60;
  const minute = rest % 60;
  return { year, month, day, hour: (rest - minute) / 60, minute, second, ms };
}

/**
 * A date/time as CONVERT writes it in `style` (as every converted commit time is): the date part
 * from DATE_TEXT, the time of day by division, no parts object.
 */
function dateText(d: Date, type: SqlType, style: number | undefined): string {
  const t = d.getTime();
  const days = Math.floor(t / 86_400_000);
  const date = dayText(days);
  if (type.name === 'date' || style === 23) return date;
  let rest = t - days * 86_400_000;
  const ms = rest % 1000;
  rest = (rest - ms) / 1000;
  const second = rest % 60;
  rest = (rest - second) / 60;
  const minute = rest % 60;
  const time = `${TWO_DIGITS[(rest - minute) / 60]}:${TWO_DIGITS[minute]}:${TWO_DIGITS[second]}`;
  // The fraction a type's scale keeps (the model holds milliseconds: the rest are zeros).
  const fraction = (scale: number) => (scale > 0 ? `.${`${THREE_DIGITS[ms]}0000`.slice(0, scale)}` : '');
  // time alone: hh:mm:ss and the fraction its scale has (style 126 too); 16 characters for time(7).
  if (type.name === 'time') return `${time}${fraction(type.scale ?? 7)}`;
  if (style === 126) {
    // yyyy-mm-ddThh:mi:ss[.mmm]: datetime leaves out a zero fraction, datetime2 prints its scale.
    if (type.name === 'datetime') return ms ? `${date}T${time}.${THREE_DIGITS[ms]}` : `${date}T${time}`;
    return `${date}T${time}${fraction(type.scale ?? 7)}`;
  }
  return `${date} ${time}${fraction(type.name === 'datetime' ? 3 : (type.scale ?? 7))}`;
}

function conversionNotAllowed(from: SqlType, to: SqlType): never {
  throw new SqlServerError(529, `Explicit conversion from data type ${from.name} to ${to.name} is not allowed.`);
}

/** CONVERT(type, value, style) for the conversions SQL Server allows; 529/8114 otherwise. */
export function convert(value: SqlValue, from: SqlType, to: SqlType, style?: number): SqlValue {
  if (value === null) return null;
  if (isText(to)) {
    let text: string;
    if (Buffer.isBuffer(value)) text = style === 1 ? `0x${value.toString('hex').toUpperCase()}` : style === 2 ? value.toString('hex').toUpperCase() : value.toString('latin1');
    else if (value instanceof Date) text = dateText(value, from, style);
    else if (typeof value === 'boolean') text = value ? '1' : '0';
    else if (from.name === 'money' && typeof value === 'string') text = style === 2 ? Number(value).toFixed(4) : Number(value).toFixed(2);
    else text = String(value);
    const max = to.length === 'max' ? Infinity : (to.length ?? 30);
    if (text.length > max) {
      if (isNum(from) || isDate(from)) throw new SqlServerError(8115, `Arithmetic overflow error converting ${from.name} to data type ${to.name}.`);
      text = text.slice(0, max);
    }
    return text;
  }
  if (isBinary(to)) {
    let buf: Buffer;
    if (Buffer.isBuffer(value)) buf = value;
    else if (typeof value === 'string' && isText(from)) {
      if (style === 1 || style === 2) {
        const digits = style === 1 ? value.replace(/^0x/i, '') : value;
        if (style === 1 && !/^0x/i.test(value)) throw new SqlServerError(8114, `Error converting data type ${from.name} to ${to.name}.`);
        if (!/^[0-9a-fA-F]*$/.test(digits) || digits.length % 2) throw new SqlServerError(8114, `Error converting data type ${from.name} to ${to.name}.`);
        buf = Buffer.from(digits, 'hex');
      } else buf = Buffer.from(value, from.name.startsWith('n') ? 'utf16le' : 'latin1');
    } else return conversionNotAllowed(from, to);
    const n = to.length === 'max' ? buf.length : (to.length ?? 30);
    if (to.name === 'binary') return buf.length >= n ? buf.subarray(0, n) : Buffer.concat([buf, Buffer.alloc(n - buf.length)]);
    return buf.subarray(0, n);
  }
  if (to.name === 'bit') {
    if (typeof value === 'boolean') return value;
    if (typeof value === 'number' || typeof value === 'bigint') return Number(value) !== 0;
    if (typeof value === 'string') {
      if (/^true$/i.test(value)) return true;
      if (/^false$/i.test(value)) return false;
      if (/^-?\d+$/.test(value.trim())) return Number(value) !== 0;
      throw new SqlServerError(245, `Conversion failed when converting the ${from.name} value '${value}' to data type bit.`);
    }
    return conversionNotAllowed(from, to);
  }
  if (['tinyint', 'smallint', 'int'].includes(to.name)) {
    const n = typeof value === 'boolean' ? (value ? 1 : 0) : Number(value);
    if (!Number.isFinite(n) || Buffer.isBuffer(value) || value instanceof Date) throw new SqlServerError(245, `Conversion failed when converting the ${from.name} value '${String(value)}' to data type ${to.name}.`);
    return Math.trunc(n);
  }
  if (to.name === 'bigint') return typeof value === 'boolean' ? (value ? '1' : '0') : String(BigInt(String(value).split('.')[0]!));
  if (to.name === 'decimal' || to.name === 'numeric' || to.name === 'money') return Number(value).toFixed(to.scale ?? (to.name === 'money' ? 4 : 0));
  if (to.name === 'float' || to.name === 'real') return Number(value);
  if (isDate(to)) {
    if (value instanceof Date) return value;
    if (typeof value === 'string') {
      const d = new Date(/[zZ]|[+-]\d\d:\d\d$/.test(value) ? value : `${value.replace(' ', 'T')}Z`);
      if (Number.isNaN(d.getTime())) throw new SqlServerError(241, 'Conversion failed when converting date and/or time from character string.');
      return d;
    }
    return conversionNotAllowed(from, to);
  }
  return value;
}

/**
 * CONVERT(to, a value of type `from`, style) as one function chosen when the expression is bound:
 * the conversions a change read makes for every row (a date/time or decimal text to text) skip
 * the type tests of convert(), which answers everything else and every value of another kind.
 */
export function converter(from: SqlType, to: SqlType, style: number | undefined): (value: SqlValue) => SqlValue {
  const generic = (v: SqlValue) => convert(v, from, to, style);
  if (!isText(to)) return generic;
  const max = to.length === 'max' ? Infinity : (to.length ?? 30);
  if (isDate(from)) {
    return (v) => {
      if (!(v instanceof Date)) return generic(v);
      const text = dateText(v, from, style);
      return text.length <= max ? text : generic(v);
    };
  }
  // Text, and exact numbers kept as their text (decimal, numeric, bigint): the value itself when it fits.
  if (isText(from) || from.name === 'decimal' || from.name === 'numeric' || from.name === 'bigint') {
    return (v) => (typeof v === 'string' && v.length <= max ? v : generic(v));
  }
  return generic;
}

interface Bound {
  alias: string;
  /** Lower-case names of the object: 'tables', 'sys.tables'. */
  names: string[];
  columns: ColumnDef[];
  /** The inner side of a LEFT JOIN: every column may be NULL. */
  outer?: boolean;
  /** The columns (by index) the statement reads, filled in as names are bound. */
  used?: Set<number>;
}

type Ctx = { rows: Row[]; outer?: Ctx };

interface Compiled {
  type: SqlType;
  nullable?: boolean;
  eval(ctx: Ctx): SqlValue;
}

interface Scope {
  sources: Bound[];
  parent?: Scope;
}

const AGGREGATES = new Set(['count', 'count_big', 'max', 'min', 'sum']);

/** One batch or sp_executesql statement. */
export class Batch {
  private readonly vars = new Map<string, { type: SqlType; value: SqlValue }>();
  private readonly touched: string[] = [];

  constructor(
    private readonly catalog: Catalog,
    params: Param[],
    private readonly ctx: ExecuteContext,
  ) {
    for (const p of params) this.vars.set(p.name.toLowerCase(), { type: p.type, value: p.value });
  }

  async *run(sql: string): AsyncGenerator<BatchOutput> {
    const statements = Parser.batch(sql);
    for (const s of statements) yield* this.statement(s);
  }

  private async *statement(s: Statement): AsyncGenerator<BatchOutput> {
    if (this.ctx.signal.aborted) return;
    switch (s.k) {
      case 'select': {
        const { columns, rows } = await this.prepare(() => this.select(s, undefined));
        yield { columns, rows: rows() };
        return;
      }
      case 'declare':
        for (const v of s.vars) {
          const init = v.init ? await this.prepare(() => this.expr(v.init!, { sources: [] })) : undefined;
          this.vars.set(v.name.toLowerCase(), { type: v.type, value: init ? convert(init.eval({ rows: [] }), init.type, v.type) : null });
        }
        return;
      case 'setVar': {
        const target = this.variable(s.name);
        const e = await this.prepare(() => this.expr(s.value, { sources: [] }));
        target.value = convert(e.eval({ rows: [] }), e.type, target.type);
        return;
      }
      case 'setOption':
        return;
      case 'if': {
        const cond = await this.prepare(() => this.expr(s.cond, { sources: [] }));
        if (cond.eval({ rows: [] }) === true) yield* this.statement(s.then);
        else if (s.else) yield* this.statement(s.else);
        return;
      }
      case 'block':
        for (const b of s.body) yield* this.statement(b);
        return;
      case 'exec': {
        const args = s.args.map((a) => {
          const e = this.expr(a.value, { sources: [] });
          return { ...(a.name !== undefined ? { name: a.name } : {}), value: e.eval({ rows: [] }) };
        });
        this.touched.push(s.proc.join('.'));
        await this.flushTouched();
        const status = await this.catalog.procedure(s.proc, args);
        if (s.returnVar !== undefined) this.variable(s.returnVar).value = status;
        return;
      }
      case 'execString': {
        let text = '';
        for (const p of s.parts) {
          const v = p.k === 'lit' ? p.v : this.variable((p as { name: string }).name).value;
          if (v === null) return; // NULL + anything is NULL: EXEC of NULL does nothing
          text += String(v);
        }
        // Dynamic SQL runs as its own batch with none of this batch's variables.
        yield* new Batch(this.catalog, [], this.ctx).run(text);
        return;
      }
      case 'createSchema':
        this.catalog.createSchema(s.name);
        return;
      case 'createTable':
        this.catalog.createTable(
          s.name,
          s.columns.map((c) => {
            const d = c.defaultExpr ? this.expr(c.defaultExpr, { sources: [] }) : undefined;
            return { name: c.name, type: c.type, nullable: c.nullable, ...(d ? { defaultValue: () => convert(d.eval({ rows: [] }), d.type, c.type) } : {}) };
          }),
          s.primaryKey,
        );
        return;
      case 'dropTable':
        this.catalog.dropTable(s.name, s.ifExists);
        return;
      case 'delete': {
        const table = this.catalog.writable(s.name);
        const scope: Scope = { sources: [{ alias: s.name.at(-1)!.toLowerCase(), names: [s.name.join('.').toLowerCase()], columns: table.columns }] };
        const where = s.where ? this.expr(s.where, scope) : undefined;
        this.touched.push(s.name.join('.'));
        await this.flushTouched();
        yield { rowCount: table.delete((r) => where === undefined || where.eval({ rows: [r] }) === true) };
        return;
      }
      case 'merge':
        yield { rowCount: await this.merge(s) };
        return;
    }
  }

  private async flushTouched(): Promise<void> {
    const names = this.touched.splice(0);
    if (names.length > 0) await this.catalog.touch(names);
  }

  /** Binds names and derives types (errors 207/208/4104 before anything runs), then lets the catalog see what the statement names. */
  private async prepare<T>(compile: () => T): Promise<T> {
    const out = compile();
    await this.flushTouched();
    return out;
  }

  private variable(name: string) {
    const v = this.vars.get(name.toLowerCase());
    if (v === undefined) throw new SqlServerError(137, `Must declare the scalar variable "@${name}".`, 15);
    return v;
  }

  private bindSource(src: Source, scope: Scope): {
    bound: Bound;
    open: () => Iterable<Row>;
    orderedBy?: string[];
    seek?: Relation['seek'];
    get?: Relation['get'];
    scanKeys?: Relation['scanKeys'];
    each?: (outer: Ctx | undefined, visit: RowVisitor) => void;
    /** Columns (by index) whose values `each` pushes in ascending order. */
    ascending?: ReadonlySet<number>;
  } {
    switch (src.k) {
      case 'table': {
        const rel = this.catalog.relation(src.name, undefined, undefined);
        this.touched.push(src.name.join('.'));
        const last = src.name.at(-1)!.toLowerCase();
        const used = new Set<number>();
        const seek = rel.seek?.bind(rel);
        return {
          bound: { alias: (src.alias ?? last).toLowerCase(), names: src.alias ? [] : [last, src.name.join('.').toLowerCase()], columns: rel.columns, used },
          open: () => rel.open(used),
          ...(rel.orderedBy ? { orderedBy: rel.orderedBy } : {}),
          ...(seek ? { seek: (lo: SeekBound | undefined, hi: SeekBound | undefined) => seek(lo, hi, used) } : {}),
          ...(rel.get ? { get: rel.get.bind(rel) } : {}),
          ...(rel.scanKeys ? { scanKeys: rel.scanKeys.bind(rel) } : {}),
        };
      }
      case 'tvf': {
        const args = src.args.map((a) => this.expr(a, scope));
        const argTypes = args.map((a) => a.type);
        // The function is bound with its arguments' values when the statement runs.
        const probe = this.catalog.relation(src.name, undefined, argTypes);
        this.touched.push(src.name.join('.'));
        const last = src.name.at(-1)!.toLowerCase();
        return {
          bound: { alias: (src.alias ?? last).toLowerCase(), names: src.alias ? [] : [last], columns: probe.columns },
          open: () => this.catalog.relation(src.name, args.map((a) => a.eval({ rows: [] })), argTypes).open(),
          ...(probe.orderedBy ? { orderedBy: probe.orderedBy } : {}),
        };
      }
      case 'openjson': {
        const json = this.expr(src.json, scope);
        const columns = src.with.map((c) => ({ name: c.name, type: c.type, nullable: true }));
        return {
          bound: { alias: (src.alias ?? 'openjson').toLowerCase(), names: [], columns },
          open: function* () {
            const text = json.eval({ rows: [] });
            if (text === null) return;
            let doc: unknown;
            try {
              doc = JSON.parse(String(text));
            } catch {
              throw new SqlServerError(13609, 'JSON text is not properly formatted. Unexpected character is found at position 0.');
            }
            const items = Array.isArray(doc) ? doc : typeof doc === 'object' && doc !== null ? Object.values(doc) : [];
            for (const item of items) {
              yield src.with.map((c) => {
                const path = (c.path ?? `$.${c.name}`).replace(/^(lax|strict)\s+/i, '');
                let v: unknown = item;
                for (const key of path.replace(/^\$\.?/, '').split('.').filter(Boolean)) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[key] : undefined;
                if (v === undefined || v === null) return null;
                const textType: SqlType = { name: 'nvarchar', length: 'max' };
                return convert(typeof v === 'object' ? null : String(v), textType, c.type);
              });
            }
          },
        };
      }
      case 'derived': {
        const { columns, rows, each, ascending } = this.select(src.q, scope);
        return { bound: { alias: src.alias.toLowerCase(), names: [], columns }, open: rows, ...(each ? { each } : {}), ...(ascending ? { ascending } : {}) };
      }
    }
  }

  private select(
    q: Select,
    parent: Scope | undefined,
  ): {
    columns: ColumnDef[];
    rows: (outer?: Ctx) => Iterable<Row>;
    /** The first value of the one row a unique key selects (NULL without one), for a scalar subquery: no row array per call. */
    lookupValue?: (outer?: Ctx) => SqlValue;
    each?: (outer: Ctx | undefined, visit: RowVisitor) => void;
    ascending?: ReadonlySet<number>;
  } {
    const scope: Scope = { sources: [], ...(parent ? { parent } : {}) };
    const opens: Array<(outer?: Ctx) => Iterable<Row>> = [];
    // key = x on a unique key of the only source: at most one row, found by `lookupValue` below.
    let singleton: ((outer?: Ctx) => Row | undefined) | undefined;
    let orderedBy: string[] | undefined;
    // The first source as bound, and the key range its WHERE gives (a seek), for an index-only read below.
    let first: ReturnType<Batch['bindSource']> | undefined;
    let range: ReturnType<Batch['keyRange']> | undefined;
    // The source's rows pushed to a visitor (a derived table read by key only).
    let eachFirst: ((outer: Ctx | undefined, visit: RowVisitor) => void) | undefined;
    const joins: Array<{ kind: 'inner' | 'left'; on: Compiled }> = [];
    if (q.from) {
      const b = this.bindSource(q.from, scope);
      first = b;
      eachFirst = b.each;
      scope.sources.push(b.bound);
      opens.push(b.open);
      orderedBy = b.orderedBy;
      if (b.seek && orderedBy && q.joins.length === 0 && q.where) {
        // WHERE key >= x AND key <= y (or key = x) on the clustered key: read only that range (WHERE
        // still applies). x may be a column of an outer query: a correlated subquery seeks per row.
        range = this.keyRange(q.where, orderedBy[0]!.toLowerCase(), b.bound.alias, scope);
        const get = b.get;
        if (range.eq && get) {
          // key = x on a unique key: at most one row, looked up without a range scan.
          const eq = range.eq;
          singleton = (outer) => get(eq(outer));
          opens[0] = (outer) => {
            const row = get(eq(outer));
            return row === undefined ? [] : [row];
          };
        } else if (range.lo || range.hi) {
          const seek = b.seek;
          const { lo, hi } = range;
          opens[0] = (outer) => seek(lo?.(outer), hi?.(outer));
        }
      }
      for (const j of q.joins) {
        const jb = this.bindSource(j.source, scope);
        scope.sources.push(j.kind === 'left' ? { ...jb.bound, outer: true } : jb.bound);
        opens.push(jb.open);
        joins.push({ kind: j.kind, on: this.expr(j.on, scope) });
      }
    }
    // aggOf: the aggregate's argument when it is a column (MAX of a column read in its own order needs no comparison).
    const items: Array<{ name: string; c: Compiled; agg?: string; aggArg?: Compiled; aggOf?: string[]; col?: string[] }> = [];
    for (const it of q.items) {
      if (it.expr.k === 'star') {
        for (const [si, s] of scope.sources.entries()) {
          if (it.expr.qualifier && s.alias !== it.expr.qualifier.toLowerCase()) continue;
          for (const [ci, col] of s.columns.entries()) {
            s.used?.add(ci);
            items.push({ name: col.name, c: { type: col.type, nullable: col.nullable ?? true, eval: (ctx) => ctx.rows[si]![ci]! } });
          }
        }
        continue;
      }
      const name = it.alias ?? (it.expr.k === 'col' ? it.expr.parts.at(-1)! : '');
      if (it.expr.k === 'call' && it.expr.name.length === 1 && AGGREGATES.has(it.expr.name[0]!.toLowerCase())) {
        const fn = it.expr.name[0]!.toLowerCase();
        const arg = it.expr.args[0];
        const aggArg = arg === undefined || arg.k === 'star' ? undefined : this.expr(arg, scope);
        const type: SqlType = fn === 'count_big' ? { name: 'bigint' } : fn === 'count' ? { name: 'int' } : aggArg!.type;
        items.push({ name, c: { type, eval: () => null }, agg: fn, ...(aggArg ? { aggArg } : {}), ...(arg?.k === 'col' ? { aggOf: arg.parts } : {}) });
        continue;
      }
      items.push({ name, c: this.expr(it.expr, scope), ...(it.expr.k === 'col' ? { col: it.expr.parts } : {}) });
    }
    const where = q.where ? this.expr(q.where, scope) : undefined;
    const top = q.top ? this.expr(q.top, { sources: [] }) : undefined;
    // ORDER BY may name a select-list alias or any bound column.
    const order = q.orderBy.map((o) => {
      if (o.expr.k === 'col' && o.expr.parts.length === 1) {
        const i = items.findIndex((x) => x.name.toLowerCase() === (o.expr as { parts: string[] }).parts[0]!.toLowerCase());
        if (i >= 0) return { item: i, desc: o.desc };
      }
      return { c: this.expr(o.expr, scope), desc: o.desc };
    });
    const sortedAlready =
      orderedBy !== undefined &&
      joins.length === 0 &&
      q.orderBy.every((o, i) => !o.desc && o.expr.k === 'col' && o.expr.parts.at(-1)!.toLowerCase() === orderedBy![i]?.toLowerCase());
    const columns: ColumnDef[] = items.map((x) => ({ name: x.name, type: x.c.type, nullable: x.c.nullable ?? true }));
    const aggregate = items.some((x) => x.agg !== undefined);
    if (aggregate && items.some((x) => x.agg === undefined)) {
      throw new SqlServerError(8120, `Column '${items.find((x) => x.agg === undefined)!.name}' is invalid in the select list because it is not contained in either an aggregate function or the GROUP BY clause.`);
    }

    const evals = items.map((x) => x.c);
    const keyed = singleton === undefined ? this.keysOnly(q, first, range, sortedAlready, joins.length) : undefined;
    const keyRows = keyed?.scan;
    // The source's columns whose values come in ascending order when its rows are pushed.
    const ascending = keyed ? new Set([keyed.key]) : first?.ascending;
    /** A column reference (by its name parts) to the one source's column `i`. */
    const refersTo = (parts: string[] | undefined, i: number): boolean => {
      const source = scope.sources[0];
      if (parts === undefined || source === undefined || scope.sources.length !== 1) return false;
      const qualifier = parts.length > 1 ? parts.slice(0, -1).join('.').toLowerCase() : undefined;
      if (qualifier !== undefined && qualifier !== source.alias && !source.names.includes(qualifier)) return false;
      return source.columns[i]?.name.toLowerCase() === parts.at(-1)!.toLowerCase();
    };
    // MAX/MIN of a column whose pushed values ascend: the last (first) value, no comparison per row.
    const inOrder = items.map((x) => (x.agg === 'max' || x.agg === 'min') && ascending !== undefined && [...ascending].some((i) => refersTo(x.aggOf, i)));
    /** The select list's values for one match. */
    const project = (c: Ctx): Row => {
      const out: Row = new Array<SqlValue>(evals.length);
      for (let i = 0; i < evals.length; i++) out[i] = evals[i]!.eval(c);
      return out;
    };

    const rows = (outer?: Ctx): Iterable<Row> => {
      const limitValue = top?.eval({ rows: [] });
      const limit = limitValue === null || limitValue === undefined ? Infinity : Number(limitValue);
      if (opens.length === 1 && !aggregate && (order.length === 0 || sortedAlready)) {
        // One source read in its own order: each row is filtered and projected as it comes, in one
        // context whose row is replaced (nothing evaluated keeps it past the row).
        const open = opens[0]!;
        return (function* () {
          const current: Row[] = [];
          const c: Ctx = outer ? { rows: current, outer } : { rows: current };
          let n = 0;
          for (const r of open(outer)) {
            current[0] = r;
            if (where !== undefined && where.eval(c) !== true) continue;
            if (n++ >= limit) return;
            yield project(c);
          }
        })();
      }
      const matches = function* (): Generator<Ctx> {
        if (opens.length === 0) {
          yield { rows: [], ...(outer ? { outer } : {}) };
          return;
        }
        if (opens.length === 1) {
          // One source (no joins): each of its rows is a match, without the nested loop's steps.
          if (outer) for (const r of opens[0]!(outer)) yield { rows: [r], outer };
          else for (const r of opens[0]!()) yield { rows: [r] };
          return;
        }
        // Inner sources are materialised once per statement (nested loops over small catalog views).
        const inner = opens.slice(1).map((o) => [...o()]);
        const walk = function* (level: number, acc: Row[]): Generator<Ctx> {
          if (level > inner.length) {
            yield { rows: acc, ...(outer ? { outer } : {}) };
            return;
          }
          const j = joins[level - 1]!;
          let any = false;
          for (const r of inner[level - 1]!) {
            const next = [...acc, r];
            if (j.on.eval({ rows: next, ...(outer ? { outer } : {}) }) !== true) continue;
            any = true;
            yield* walk(level + 1, next);
          }
          if (!any && j.kind === 'left') yield* walk(level + 1, [...acc, scope.sources[level]!.columns.map(() => null)]);
        };
        for (const r of opens[0]!(outer)) yield* walk(1, [r]);
      };
      const filtered = function* (): Generator<Ctx> {
        for (const c of matches()) if (where === undefined || where.eval(c) === true) yield c;
      };
      if (aggregate) {
        return (function* () {
          const acc = items.map(() => ({ n: 0, v: null as SqlValue }));
          // Rows pushed in the order of the column a MAX/MIN reads: its last/first value.
          const pushed = opens.length === 1 && (eachFirst !== undefined || keyRows !== undefined);
          const fold = (c: Ctx): void => {
            for (let i = 0; i < items.length; i++) {
              const x = items[i]!;
              const a = acc[i]!;
              const v = x.aggArg ? x.aggArg.eval(c) : 1;
              if (v === null) continue;
              a.n++;
              if (pushed && inOrder[i]) {
                if (x.agg === 'max' || a.v === null) a.v = v;
                continue;
              }
              if (x.agg === 'max' && (a.v === null || compare(v, a.v)! > 0)) a.v = v;
              if (x.agg === 'min' && (a.v === null || compare(v, a.v)! < 0)) a.v = v;
              if (x.agg === 'sum') a.v = Number(a.v ?? 0) + Number(v);
            }
          };
          if (opens.length === 1) {
            // One source: each row folded in as it comes, in one context whose row is replaced.
            const current: Row[] = [];
            const c: Ctx = outer ? { rows: current, outer } : { rows: current };
            // Pushed rows (read by key only): folding keeps values, never the row.
            if (eachFirst !== undefined) {
              eachFirst(outer, (r) => {
                current[0] = r;
                if (where === undefined || where.eval(c) === true) fold(c);
                return true;
              });
            } else if (keyRows !== undefined) {
              keyRows(
                outer,
                (r) => {
                  current[0] = r;
                  fold(c);
                  return true;
                },
                where,
              );
            } else {
              for (const r of opens[0]!(outer)) {
                current[0] = r;
                if (where === undefined || where.eval(c) === true) fold(c);
              }
            }
          } else for (const c of filtered()) fold(c);
          yield items.map((x, i) => (x.agg === 'count_big' ? String(acc[i]!.n) : x.agg === 'count' ? acc[i]!.n : acc[i]!.v));
        })();
      }
      if (order.length === 0 || sortedAlready) {
        return (function* () {
          let n = 0;
          for (const c of filtered()) {
            if (n++ >= limit) return;
            yield project(c);
          }
        })();
      }
      return (function* () {
        const all = [...filtered()].map((c) => ({ out: project(c), keys: order.map((o) => ('item' in o ? null : o.c!.eval(c))), c }));
        all.sort((a, b) => {
          for (const [i, o] of order.entries()) {
            const x = 'item' in o && o.item !== undefined ? a.out[o.item]! : a.keys[i]!;
            const y = 'item' in o && o.item !== undefined ? b.out[o.item]! : b.keys[i]!;
            const cmp = x === null ? (y === null ? 0 : -1) : y === null ? 1 : compare(x, y)!;
            if (cmp !== 0) return o.desc ? -cmp : cmp;
          }
          return 0;
        });
        let n = 0;
        for (const r of all) {
          if (n++ >= limit) return;
          yield r.out;
        }
      })();
    };
    if (singleton !== undefined && !aggregate && order.length === 0 && top === undefined) {
      // A scalar subquery on a unique key (as a correlated lookup is, once per outer row): no iterators.
      const find = singleton;
      // One context, its row and outer replaced per call: the lookup finishes before the next.
      const current: Row[] = [];
      const c: Ctx = { rows: current };
      // The WHERE is that key = x and nothing else: the row found is the one it selects.
      const check = range?.exact === true ? undefined : where;
      const value = evals[0]!;
      const lookupValue = (outer?: Ctx): SqlValue => {
        const row = find(outer);
        if (row === undefined) return null;
        current[0] = row;
        c.outer = outer;
        if (check !== undefined && check.eval(c) !== true) return null;
        return value.eval(c);
      };
      return { columns, rows, lookupValue };
    }
    if (keyRows === undefined || aggregate) return { columns, rows };
    // Read by key only, and not an aggregate: rows pushed to a visitor in one reused array (a derived
    // table counted by the select around it), with the WHERE, TOP and select list as `rows` applies them.
    const scan = keyRows;
    const each = (outer: Ctx | undefined, visit: RowVisitor): void => {
      const limitValue = top?.eval({ rows: [] });
      const limit = limitValue === null || limitValue === undefined ? Infinity : Number(limitValue);
      const current: Row[] = [];
      const c: Ctx = outer ? { rows: current, outer } : { rows: current };
      const out: Row = new Array<SqlValue>(evals.length);
      let n = 0;
      scan(
        outer,
        (r) => {
          current[0] = r;
          if (n++ >= limit) return false;
          for (let i = 0; i < evals.length; i++) out[i] = evals[i]!.eval(c);
          return visit(out);
        },
        where,
      );
    };
    // Output columns that are the key itself come out ascending.
    const key = keyed!.key;
    const out = new Set(items.flatMap((x, j) => (refersTo(x.col, key) ? [j] : [])));
    return { columns, rows, each, ...(out.size > 0 ? { ascending: out } : {}) };
  }

  /**
   * A select that reads nothing of its only source but the clustered key (`SELECT TOP (n) key FROM t
   * WHERE <key range> ORDER BY key`, or a COUNT of such a range) runs as SQL Server runs it: an
   * index-only seek, the keys visited in order and no row built. Each key is pushed in one reused
   * row holding only the key (every other column NULL, and nothing reads them), so the WHERE, the
   * select list and the aggregates give what they give on the full row. The WHERE is applied here
   * (given as `where`), per key only where the seek's range does not already say it. Undefined when
   * the select reads any other column of the source.
   */
  private keysOnly(
    q: Select,
    first: ReturnType<Batch['bindSource']> | undefined,
    range: ReturnType<Batch['keyRange']> | undefined,
    sortedAlready: boolean,
    joins: number,
  ): { scan: (outer: Ctx | undefined, visit: RowVisitor, where: Compiled | undefined) => void; key: number } | undefined {
    const scanKeys = first?.scanKeys;
    const orderedBy = first?.orderedBy;
    if (first === undefined || scanKeys === undefined || orderedBy === undefined || joins > 0) return undefined;
    if (q.orderBy.length > 0 && !sortedAlready) return undefined;
    const { columns, used } = first.bound;
    const key = columns.findIndex((c) => c.name.toLowerCase() === orderedBy[0]!.toLowerCase());
    if (key < 0 || used === undefined || used.size > 1 || (used.size === 1 && !used.has(key))) return undefined;
    const lo = range?.lo;
    const hi = range?.hi;
    // A seek whose range is the whole WHERE leaves nothing to check per key (no residual predicate),
    // when the bounds compare as the WHERE would: binary values of the key's own length.
    const keyType = columns[key]!.type;
    const exact = range?.exact === true && keyType.name === 'binary' && typeof keyType.length === 'number';
    const seekOnly = (b: SeekBound | undefined) => b === undefined || (Buffer.isBuffer(b.value) && b.value.length === keyType.length);
    const scan = (outer: Ctx | undefined, visit: RowVisitor, residual: Compiled | undefined): void => {
      const l = lo?.(outer);
      const h = hi?.(outer);
      // key >= NULL is unknown, and so is the AND of the WHERE: no row.
      if (exact && (l?.value === null || h?.value === null)) return;
      const row: Row = new Array<SqlValue>(columns.length).fill(null);
      if (exact && seekOnly(l) && seekOnly(h)) {
        scanKeys(l, h, (k) => {
          row[key] = k;
          return visit(row);
        });
        return;
      }
      const current: Row[] = [row];
      const c: Ctx = outer ? { rows: current, outer } : { rows: current };
      scanKeys(l, h, (k) => {
        row[key] = k;
        return residual === undefined || residual.eval(c) === true ? visit(row) : true;
      });
    };
    return { scan, key };
  }

  /**
   * Bounds on `key` from the AND-ed comparisons of a WHERE clause with a variable or literal.
   * `exact`: the WHERE is those comparisons and nothing else, each a bound of its own.
   */
  private keyRange(
    where: Expr,
    key: string,
    alias: string,
    scope: Scope,
  ): { lo?: (outer?: Ctx) => SeekBound; hi?: (outer?: Ctx) => SeekBound; eq?: (outer?: Ctx) => SqlValue; exact: boolean } {
    const out: { lo?: (outer?: Ctx) => SeekBound; hi?: (outer?: Ctx) => SeekBound; eq?: (outer?: Ctx) => SqlValue; exact: boolean } = { exact: true };
    const conjuncts: Expr[] = [];
    const flatten = (e: Expr): void => {
      if (e.k === 'bin' && e.op === 'AND') {
        flatten(e.l);
        flatten(e.r);
      } else conjuncts.push(e);
    };
    flatten(where);
    const isKey = (e: Expr) => e.k === 'col' && e.parts.at(-1)!.toLowerCase() === key && (e.parts.length === 1 || e.parts[0]!.toLowerCase() === alias);
    // A column none of this query's sources has: the outer query's (a correlated subquery).
    const isOuter = (e: Expr) => {
      if (e.k !== 'col' || scope.parent === undefined) return false;
      const name = e.parts.at(-1)!.toLowerCase();
      const qualifier = e.parts.length > 1 ? e.parts.slice(0, -1).join('.').toLowerCase() : undefined;
      return !scope.sources.some((s) => (qualifier === undefined || s.alias === qualifier || s.names.includes(qualifier)) && s.columns.some((c) => c.name.toLowerCase() === name));
    };
    const isValue = (e: Expr) => e.k === 'var' || e.k === 'lit' || isOuter(e);
    const flip: Record<string, string> = { '>=': '<=', '>': '<', '<=': '>=', '<': '>', '=': '=' };
    for (const c of conjuncts) {
      if (c.k !== 'bin' || !(c.op in flip)) {
        out.exact = false;
        continue;
      }
      let op = c.op;
      let value: Expr;
      if (isKey(c.l) && isValue(c.r)) value = c.r;
      else if (isKey(c.r) && isValue(c.l)) (value = c.l), (op = flip[op]!);
      else {
        out.exact = false;
        continue;
      }
      const v = this.expr(value, scope);
      // The value needs no row of this query, only the outer one's: one context, its outer replaced per call.
      const probe: Ctx = { rows: [] };
      const valueOf = (outer?: Ctx) => {
        probe.outer = outer;
        return v.eval(probe);
      };
      const inclusive = op.endsWith('=');
      const bound = (outer?: Ctx) => ({ value: valueOf(outer), inclusive });
      // A second bound on the same side replaces the first, which then only the WHERE applies.
      if ((op !== '<' && op !== '<=' && out.lo) || (op !== '>' && op !== '>=' && out.hi)) out.exact = false;
      if (op !== '<' && op !== '<=') out.lo = bound;
      if (op !== '>' && op !== '>=') out.hi = bound;
      if (op === '=') out.eq = valueOf;
    }
    return out;
  }

  private resolveColumn(parts: string[], scope: Scope, depth = 0): Compiled {
    const name = parts.at(-1)!.toLowerCase();
    const qualifier = parts.length > 1 ? parts.slice(0, -1).join('.').toLowerCase() : undefined;
    const hits: Array<[number, number]> = [];
    for (const [si, s] of scope.sources.entries()) {
      if (qualifier !== undefined && s.alias !== qualifier && !s.names.includes(qualifier)) continue;
      const ci = s.columns.findIndex((c) => c.name.toLowerCase() === name);
      if (ci >= 0) hits.push([si, ci]);
    }
    if (hits.length > 1) throw new SqlServerError(209, `Ambiguous column name '${parts.at(-1)}'.`);
    if (hits.length === 1) {
      const [si, ci] = hits[0]!;
      const col = scope.sources[si]!.columns[ci]!;
      scope.sources[si]!.used?.add(ci);
      return {
        type: col.type,
        nullable: scope.sources[si]!.outer === true || (col.nullable ?? true),
        eval:
          depth === 0
            ? (ctx) => ctx.rows[si]?.[ci] ?? null
            : depth === 1
              ? (ctx) => ctx.outer!.rows[si]?.[ci] ?? null
              : (ctx) => {
                  let c: Ctx = ctx;
                  for (let d = 0; d < depth; d++) c = c.outer!;
                  return c.rows[si]?.[ci] ?? null;
                },
      };
    }
    if (scope.parent) {
      try {
        return this.resolveColumn(parts, scope.parent, depth + 1);
      } catch (err) {
        if (!(err instanceof SqlServerError) || (err.number !== 207 && err.number !== 4104)) throw err;
      }
    }
    if (qualifier !== undefined && !scope.sources.some((s) => s.alias === qualifier || s.names.includes(qualifier))) {
      throw new SqlServerError(4104, `The multi-part identifier "${parts.join('.')}" could not be bound.`);
    }
    throw new SqlServerError(207, `Invalid column name '${parts.at(-1)}'.`);
  }

  private expr(e: Expr, scope: Scope): Compiled {
    switch (e.k) {
      case 'lit': {
        const v = e.v;
        return { type: e.type, eval: () => v };
      }
      case 'var': {
        const v = this.variable(e.name);
        return { type: v.type, eval: () => v.value };
      }
      case 'col':
        return this.resolveColumn(e.parts, scope);
      case 'star':
        throw new SqlServerError(102, "Incorrect syntax near '*'.");
      case 'call': {
        const args = e.args.map((a) => this.expr(a, scope));
        const fn = this.catalog.scalar(e.name, args.map((a) => a.type));
        if (e.name.length > 1) this.touched.push(e.name.join('.'));
        return { type: fn.type, eval: (ctx) => fn.call(args.map((a) => a.eval(ctx))) };
      }
      case 'convert': {
        const inner = this.expr(e.expr, scope);
        const conv = converter(inner.type, e.type, e.style);
        return { type: e.type, eval: (ctx) => conv(inner.eval(ctx)) };
      }
      case 'case': {
        const operand = e.operand ? this.expr(e.operand, scope) : undefined;
        const whens = e.whens.map(([w, t]) => [this.expr(w, scope), this.expr(t, scope)] as const);
        const otherwise = e.else ? this.expr(e.else, scope) : undefined;
        const results = [...whens.map((w) => w[1]), ...(otherwise ? [otherwise] : [])];
        const typed = results.find((r) => !(r.type.name === 'int' && r.eval === undefined)) ?? results[0]!;
        // The result type is the branch type of highest precedence; a NULL literal has none.
        const nonNull = e.whens.map((w) => w[1]).concat(e.else ? [e.else] : []).map((x, i) => (x.k === 'lit' && x.v === null ? undefined : results[i]!.type)).filter((t): t is SqlType => t !== undefined);
        const type = nonNull.find(isText) ?? nonNull.find((t) => t.name === 'bigint') ?? nonNull[0] ?? typed.type;
        return {
          type,
          eval: (ctx) => {
            const base = operand?.eval(ctx);
            for (const [w, t] of whens) {
              const hit = operand ? compare(base ?? null, w.eval(ctx)) === 0 : w.eval(ctx) === true;
              if (hit) return convert(t.eval(ctx), t.type, type);
            }
            return otherwise ? convert(otherwise.eval(ctx), otherwise.type, type) : null;
          },
        };
      }
      case 'bin': {
        const l = this.expr(e.l, scope);
        const r = this.expr(e.r, scope);
        // Three-valued logic, each side evaluated once (the right one only when the left does not decide).
        if (e.op === 'AND') {
          return {
            type: { name: 'bit' },
            eval: (c) => {
              const a = l.eval(c);
              if (a === false) return false;
              const b = r.eval(c);
              return b === false ? false : a === true && b === true ? true : null;
            },
          };
        }
        if (e.op === 'OR') {
          return {
            type: { name: 'bit' },
            eval: (c) => {
              const a = l.eval(c);
              if (a === true) return true;
              const b = r.eval(c);
              return b === true ? true : a === false && b === false ? false : null;
            },
          };
        }
        if (['=', '<>', '<', '>', '<=', '>='].includes(e.op)) {
          if ((isBinary(l.type) && isDate(r.type)) || (isDate(l.type) && isBinary(r.type))) throw new SqlServerError(206, `Operand type clash: ${l.type.name} is incompatible with ${r.type.name}`);
          // The operator is resolved once here, not for every row.
          const holds = COMPARISONS[e.op]!;
          return {
            type: { name: 'bit' },
            eval: (c) => {
              const cmp = compare(l.eval(c), r.eval(c));
              return cmp === null ? null : holds(cmp);
            },
          };
        }
        if (e.op === '+' && (isText(l.type) || isText(r.type))) {
          const type: SqlType = { name: l.type.name === 'nvarchar' || r.type.name === 'nvarchar' ? 'nvarchar' : 'varchar', length: 4000 };
          return {
            type,
            eval: (c) => {
              const a = l.eval(c);
              if (a === null) return null;
              const b = r.eval(c);
              return b === null ? null : String(a) + String(b);
            },
          };
        }
        return {
          type: l.type.name === 'bigint' || r.type.name === 'bigint' ? { name: 'bigint' } : { name: 'int' },
          eval: (c) => {
            const a = l.eval(c);
            const b = r.eval(c);
            if (a === null || b === null) return null;
            const x = Number(a);
            const y = Number(b);
            if ((e.op === '/' || e.op === '%') && y === 0) throw new SqlServerError(8134, 'Divide by zero error encountered.');
            return e.op === '+' ? x + y : e.op === '-' ? x - y : e.op === '*' ? x * y : e.op === '/' ? Math.trunc(x / y) : x % y;
          },
        };
      }
      case 'not': {
        const inner = this.expr(e.e, scope);
        return {
          type: { name: 'bit' },
          eval: (c) => {
            const v = inner.eval(c);
            return v === null ? null : v !== true;
          },
        };
      }
      case 'neg': {
        const inner = this.expr(e.e, scope);
        return {
          type: inner.type,
          eval: (c) => {
            const v = inner.eval(c);
            return v === null ? null : -Number(v);
          },
        };
      }
      case 'isnull': {
        const inner = this.expr(e.e, scope);
        return { type: { name: 'bit' }, eval: (c) => (inner.eval(c) === null) !== e.not };
      }
      case 'like': {
        const l = this.expr(e.l, scope);
        const r = this.expr(e.r, scope);
        return {
          type: { name: 'bit' },
          eval: (c) => {
            const v = l.eval(c);
            const p = r.eval(c);
            if (v === null || p === null) return null;
            const re = new RegExp(`^${String(p).replace(/[.*+?^${}()|\\]/g, '\\$&').replace(/%/g, '.*').replace(/_/g, '.')}$`, 'is');
            return re.test(String(v)) !== e.not;
          },
        };
      }
      case 'in': {
        const v = this.expr(e.e, scope);
        const list = e.list.map((x) => this.expr(x, scope));
        return { type: { name: 'bit' }, eval: (c) => list.some((x) => compare(v.eval(c), x.eval(c)) === 0) !== e.not };
      }
      case 'exists': {
        const sub = this.select(e.q, scope);
        return { type: { name: 'bit' }, eval: (c) => !sub.rows(c)[Symbol.iterator]().next().done };
      }
      case 'sub': {
        const sub = this.select(e.q, scope);
        if (sub.columns.length !== 1) throw new SqlServerError(116, 'Only one expression can be specified in the select list when the subquery is not introduced with EXISTS.');
        const lookupValue = sub.lookupValue;
        if (lookupValue !== undefined) return { type: sub.columns[0]!.type, eval: (c) => lookupValue(c) ?? null };
        return {
          type: sub.columns[0]!.type,
          eval: (c) => {
            const it = sub.rows(c)[Symbol.iterator]();
            const first = it.next();
            if (first.done) return null;
            if (!it.next().done) throw new SqlServerError(512, 'Subquery returned more than 1 value. This is not permitted when the subquery follows =, !=, <, <= , >, >= or when the subquery is used as an expression.');
            return first.value[0] ?? null;
          },
        };
      }
    }
  }

  private async merge(s: Extract<Statement, { k: 'merge' }>): Promise<number> {
    const table = this.catalog.writable(s.target);
    const tAlias = (s.alias ?? s.target.at(-1)!).toLowerCase();
    const src = this.bindSource(s.source, { sources: [] });
    const scope: Scope = { sources: [{ alias: tAlias, names: [s.target.join('.').toLowerCase()], columns: table.columns }, src.bound] };
    const on = this.expr(s.on, scope);
    const cond = s.matched?.cond ? this.expr(s.matched.cond, scope) : undefined;
    const colIndex = (name: string) => {
      const i = table.columns.findIndex((c) => c.name.toLowerCase() === name.toLowerCase());
      if (i < 0) throw new SqlServerError(207, `Invalid column name '${name}'.`);
      return i;
    };
    const set = (s.matched?.set ?? []).map(([col, e]) => ({ i: colIndex(col), c: this.expr(e, scope) }));
    const insertCols = (s.notMatched?.columns ?? []).map(colIndex);
    const srcOnly: Scope = { sources: [{ alias: '#target', names: [], columns: [] }, src.bound] };
    const values = (s.notMatched?.values ?? []).map((e) => this.expr(e, srcOnly));
    if (values.length !== insertCols.length) throw new SqlServerError(109, 'There are more columns in the INSERT statement than values specified in the VALUES clause.');
    this.touched.push(s.target.join('.'));
    await this.flushTouched();
    let n = 0;
    const seen = new Set<Row>();
    for (const r of src.open()) {
      let matched = false;
      n += table.update(
        (t) => {
          if (on.eval({ rows: [t, r] }) !== true) return false;
          matched = true;
          if (seen.has(t)) throw new SqlServerError(8672, 'The MERGE statement attempted to UPDATE or DELETE the same row more than once.');
          seen.add(t);
          return s.matched !== undefined && (cond === undefined || cond.eval({ rows: [t, r] }) === true);
        },
        (t) => {
          const out = [...t];
          for (const x of set) out[x.i] = convert(x.c.eval({ rows: [t, r] }), x.c.type, table.columns[x.i]!.type);
          return out;
        },
      );
      if (!matched && s.notMatched) {
        const row: Row = table.columns.map(() => undefined as unknown as SqlValue);
        insertCols.forEach((ci, k) => (row[ci] = convert(values[k]!.eval({ rows: [[], r] }), values[k]!.type, table.columns[ci]!.type)));
        table.insert(row);
        n++;
      }
    }
    return n;
  }
}
