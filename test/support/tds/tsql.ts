/**
 * A T-SQL reader for the test server: tokens and a syntax tree for the subset of Transact-SQL that a
 * CDC client sends (SELECT with joins, subqueries, CASE, CONVERT/CAST, TOP; EXEC of procedures with
 * named arguments and a return status; DECLARE, IF, SET options; CREATE SCHEMA/TABLE, DROP TABLE,
 * MERGE ... USING, DELETE). Written from the T-SQL grammar as SQL Server documents it, not from any
 * client's statements: where SQL Server refuses a form, so does this (Msg 102 "Incorrect syntax near",
 * Msg 156 for a reserved keyword in the wrong place), including `EXEC (...)`, whose parentheses take
 * only string literals and variables joined with `+`.
 */
import { SqlServerError, type SqlType, type SqlTypeName } from './types.js';

export type Token =
  | { t: 'id'; v: string; quoted: boolean; pos: number }
  | { t: 'str'; v: string; n: boolean; pos: number }
  | { t: 'num'; v: string; pos: number }
  | { t: 'hex'; v: Buffer; pos: number }
  | { t: 'var'; v: string; pos: number }
  | { t: 'op'; v: string; pos: number };

/** Reserved keywords (a subset of SQL Server's list): never an identifier unless bracketed. */
const RESERVED = new Set(
  ('ADD ALL ALTER AND AS ASC BEGIN BETWEEN BY CASE CAST CHECK CONSTRAINT CONVERT CREATE CROSS DATABASE DECLARE DEFAULT DELETE DESC DISTINCT DROP ' +
    'ELSE END EXEC EXECUTE EXISTS FOREIGN FROM FULL FUNCTION GROUP HAVING IF IN INDEX INNER INSERT INTO IS JOIN KEY LEFT LIKE MERGE NOT NULL OF ON OR ORDER ' +
    'OUTER PRIMARY PROCEDURE RIGHT SCHEMA SELECT SET TABLE THEN TOP TRAN TRANSACTION UNION UPDATE USE VALUES WHEN WHERE WITH').split(' '),
);

export function incorrectSyntax(tok: Token | undefined): SqlServerError {
  if (tok === undefined) return new SqlServerError(102, "Incorrect syntax near ')'.".replace("')'", "'end of batch'"));
  if (tok.t === 'id' && !tok.quoted && RESERVED.has(tok.v.toUpperCase())) return new SqlServerError(156, `Incorrect syntax near the keyword '${tok.v.toUpperCase()}'.`);
  const text = tok.t === 'str' ? tok.v : tok.t === 'hex' ? `0x${tok.v.toString('hex')}` : tok.t === 'var' ? `@${tok.v}` : tok.v;
  return new SqlServerError(102, `Incorrect syntax near '${text}'.`);
}

/** A quoted string or identifier from `i` (after the opening mark) to `close`, where a doubled `close` is one. */
function quoted(sql: string, i: number, close: string): [string, number] {
  let v = '';
  for (;;) {
    if (i >= sql.length) throw new SqlServerError(105, `Unclosed quotation mark after the character string '${v}'.`);
    if (sql[i] === close) {
      if (sql[i + 1] !== close) return [v, i + 1];
      v += close;
      i += 2;
      continue;
    }
    v += sql[i++];
  }
}

export function tokenize(sql: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === '-' && sql[i + 1] === '-') {
      while (i < n && sql[i] !== '\n') i++;
    } else if (c === '/' && sql[i + 1] === '*') {
      const end = sql.indexOf('*/', i + 2);
      if (end < 0) throw new SqlServerError(113, "Missing end comment mark '*/'.");
      i = end + 2;
    } else if (c === "'" || ((c === 'N' || c === 'n') && sql[i + 1] === "'")) {
      const pos = i;
      const national = c !== "'";
      const [v, next] = quoted(sql, i + (national ? 2 : 1), "'");
      i = next;
      out.push({ t: 'str', v, n: national, pos });
    } else if (c === '[') {
      const pos = i;
      const [v, next] = quoted(sql, i + 1, ']');
      i = next;
      out.push({ t: 'id', v, quoted: true, pos });
    } else if (c === '0' && (sql[i + 1] === 'x' || sql[i + 1] === 'X')) {
      const pos = i;
      i += 2;
      const start = i;
      while (i < n && /[0-9a-fA-F]/.test(sql[i]!)) i++;
      let hex = sql.slice(start, i);
      if (hex.length % 2) hex = `0${hex}`;
      out.push({ t: 'hex', v: Buffer.from(hex, 'hex'), pos });
    } else if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(sql[i + 1] ?? ''))) {
      const pos = i;
      while (i < n && /[0-9.]/.test(sql[i]!)) i++;
      out.push({ t: 'num', v: sql.slice(pos, i), pos });
    } else if (c === '@') {
      const pos = i++;
      if (sql[i] === '@') i++;
      const start = i;
      while (i < n && /[\w$#@]/.test(sql[i]!)) i++;
      out.push({ t: 'var', v: sql.slice(pos + 1, i), pos });
      if (i === start) throw new SqlServerError(102, "Incorrect syntax near '@'.");
    } else if (/[A-Za-z_#]/.test(c) || c.charCodeAt(0) > 127) {
      const pos = i;
      while (i < n && (/[\w$#@]/.test(sql[i]!) || sql.charCodeAt(i) > 127)) i++;
      out.push({ t: 'id', v: sql.slice(pos, i), quoted: false, pos });
    } else {
      const two = sql.slice(i, i + 2);
      if (['<>', '>=', '<=', '!=', '!<', '!>'].includes(two)) {
        out.push({ t: 'op', v: two, pos: i });
        i += 2;
      } else if ('(),.;=<>+-*/%'.includes(c)) {
        out.push({ t: 'op', v: c, pos: i++ });
      } else {
        throw new SqlServerError(102, `Incorrect syntax near '${c}'.`);
      }
    }
  }
  return out;
}

// ---- syntax tree ----

export type Expr =
  | { k: 'lit'; v: string | number | Buffer | null; type: SqlType }
  | { k: 'var'; name: string }
  | { k: 'col'; parts: string[] }
  | { k: 'star'; qualifier?: string }
  | { k: 'call'; name: string[]; args: Expr[] }
  | { k: 'convert'; type: SqlType; expr: Expr; style?: number }
  | { k: 'case'; operand?: Expr; whens: Array<[Expr, Expr]>; else?: Expr }
  | { k: 'bin'; op: string; l: Expr; r: Expr }
  | { k: 'not'; e: Expr }
  | { k: 'neg'; e: Expr }
  | { k: 'isnull'; e: Expr; not: boolean }
  | { k: 'like'; l: Expr; r: Expr; not: boolean }
  | { k: 'in'; e: Expr; list: Expr[]; not: boolean }
  | { k: 'exists'; q: Select }
  | { k: 'sub'; q: Select };

export type Source =
  | { k: 'table'; name: string[]; alias?: string; hints: string[] }
  | { k: 'tvf'; name: string[]; args: Expr[]; alias?: string }
  | { k: 'openjson'; json: Expr; path?: Expr; with: Array<{ name: string; type: SqlType; path?: string }>; alias?: string }
  | { k: 'derived'; q: Select; alias: string };

export interface Join {
  kind: 'inner' | 'left';
  source: Source;
  on: Expr;
}

export interface SelectItem {
  expr: Expr;
  alias?: string;
}

export interface Select {
  k: 'select';
  top?: Expr;
  items: SelectItem[];
  from?: Source;
  joins: Join[];
  where?: Expr;
  orderBy: Array<{ expr: Expr; desc: boolean }>;
}

export interface ColumnSpec {
  name: string;
  type: SqlType;
  nullable: boolean;
  defaultExpr?: Expr;
}

export type Statement =
  | Select
  | { k: 'exec'; proc: string[]; args: Array<{ name?: string; value: Expr; output: boolean }>; returnVar?: string }
  | { k: 'execString'; parts: Expr[] }
  | { k: 'declare'; vars: Array<{ name: string; type: SqlType; init?: Expr }> }
  | { k: 'setVar'; name: string; value: Expr }
  | { k: 'setOption'; option: string; value: string }
  | { k: 'if'; cond: Expr; then: Statement; else?: Statement }
  | { k: 'block'; body: Statement[] }
  | { k: 'createSchema'; name: string }
  | { k: 'createTable'; name: string[]; columns: ColumnSpec[]; primaryKey: string[] }
  | { k: 'dropTable'; name: string[]; ifExists: boolean }
  | { k: 'delete'; name: string[]; where?: Expr }
  | {
      k: 'merge';
      target: string[];
      alias?: string;
      source: Source;
      on: Expr;
      matched?: { cond?: Expr; set: Array<[string, Expr]> };
      notMatched?: { columns: string[]; values: Expr[] };
    };

const TYPE_NAMES = new Set<string>(['bit', 'tinyint', 'smallint', 'int', 'bigint', 'decimal', 'numeric', 'float', 'real', 'money', 'nvarchar', 'varchar', 'nchar', 'char', 'varbinary', 'binary', 'datetime2', 'datetime', 'date', 'time', 'datetimeoffset', 'uniqueidentifier']);
const TYPE_ALIASES: Record<string, SqlType> = { sysname: { name: 'nvarchar', length: 128 }, smallmoney: { name: 'money' } };

export class Parser {
  private i = 0;

  constructor(private readonly toks: Token[]) {}

  static batch(sql: string): Statement[] {
    const p = new Parser(tokenize(sql));
    const out: Statement[] = [];
    while (!p.done()) {
      if (p.isOp(';')) {
        p.i++;
        continue;
      }
      out.push(p.statement());
    }
    return out;
  }

  // -- token helpers --
  done(): boolean {
    return this.i >= this.toks.length;
  }
  private peek(o = 0): Token | undefined {
    return this.toks[this.i + o];
  }
  private fail(): never {
    throw incorrectSyntax(this.peek());
  }
  private isKw(word: string, o = 0): boolean {
    const t = this.peek(o);
    return t !== undefined && t.t === 'id' && !t.quoted && t.v.toUpperCase() === word;
  }
  private isOp(op: string, o = 0): boolean {
    const t = this.peek(o);
    return t !== undefined && t.t === 'op' && t.v === op;
  }
  private kw(word: string): void {
    if (!this.isKw(word)) this.fail();
    this.i++;
  }
  private acceptKw(word: string): boolean {
    if (!this.isKw(word)) return false;
    this.i++;
    return true;
  }
  private op(op: string): void {
    if (!this.isOp(op)) this.fail();
    this.i++;
  }
  private acceptOp(op: string): boolean {
    if (!this.isOp(op)) return false;
    this.i++;
    return true;
  }
  /** An identifier: bracketed, or a word that is not reserved. */
  private ident(): string {
    const t = this.peek();
    if (t === undefined || t.t !== 'id' || (!t.quoted && RESERVED.has(t.v.toUpperCase()))) this.fail();
    this.i++;
    return t.v;
  }
  private isIdent(o = 0): boolean {
    const t = this.peek(o);
    return t !== undefined && t.t === 'id' && (t.quoted || !RESERVED.has(t.v.toUpperCase()));
  }
  private multipart(): string[] {
    const parts = [this.ident()];
    while (this.isOp('.')) {
      this.i++;
      parts.push(this.ident());
    }
    return parts;
  }
  private variable(): string {
    const t = this.peek();
    if (t?.t !== 'var') this.fail();
    this.i++;
    return t.v;
  }

  // -- statements --
  statement(): Statement {
    const t = this.peek();
    if (t?.t !== 'id' || t.quoted) this.fail();
    switch (t.v.toUpperCase()) {
      case 'SELECT':
        return this.select();
      case 'EXEC':
      case 'EXECUTE':
        return this.exec();
      case 'DECLARE':
        return this.declare();
      case 'SET':
        return this.set();
      case 'IF':
        return this.ifStatement();
      case 'BEGIN': {
        this.i++;
        if (this.isKw('TRAN') || this.isKw('TRANSACTION')) this.fail();
        const body: Statement[] = [];
        while (!this.isKw('END')) {
          if (this.done()) this.fail();
          if (this.acceptOp(';')) continue;
          body.push(this.statement());
        }
        this.i++;
        return { k: 'block', body };
      }
      case 'CREATE':
        return this.create();
      case 'DROP':
        return this.drop();
      case 'DELETE':
        return this.deleteStatement();
      case 'MERGE':
        return this.merge();
      default:
        // A bare procedure name is an EXEC only as the first statement of a batch.
        if (this.i === 0 && !RESERVED.has(t.v.toUpperCase())) return this.execBody();
        return this.fail();
    }
  }

  private exec(): Statement {
    this.i++;
    if (this.isOp('(')) {
      // EXEC ( { @string_variable | [N]'tsql_string' } [ + ...n ] )
      this.i++;
      const parts: Expr[] = [];
      for (;;) {
        const t = this.peek();
        if (t?.t === 'str') parts.push({ k: 'lit', v: t.v, type: { name: t.n ? 'nvarchar' : 'varchar', length: 4000 } });
        else if (t?.t === 'var') parts.push({ k: 'var', name: t.v });
        else this.fail();
        this.i++;
        if (this.acceptOp('+')) continue;
        this.op(')');
        return { k: 'execString', parts };
      }
    }
    return this.execBody();
  }

  private execBody(): Statement {
    let returnVar: string | undefined;
    if (this.peek()?.t === 'var') {
      returnVar = this.variable();
      this.op('=');
    }
    const proc = this.multipart();
    const args: Array<{ name?: string; value: Expr; output: boolean }> = [];
    if (!this.atStatementEnd()) {
      for (;;) {
        let name: string | undefined;
        if (this.peek()?.t === 'var' && this.isOp('=', 1)) {
          name = this.variable();
          this.i++;
        }
        const value = this.isKw('DEFAULT') ? (this.i++, { k: 'lit', v: null, type: { name: 'int' } } as Expr) : this.primary();
        const output = this.acceptKw('OUTPUT') || this.acceptKw('OUT');
        args.push({ ...(name !== undefined ? { name } : {}), value, output });
        if (!this.acceptOp(',')) break;
      }
    }
    return { k: 'exec', proc, args, ...(returnVar !== undefined ? { returnVar } : {}) };
  }

  /** Where a statement may end without a semicolon: the batch end, `;`, or the next statement's keyword. */
  private atStatementEnd(): boolean {
    if (this.done() || this.isOp(';')) return true;
    return ['SELECT', 'EXEC', 'EXECUTE', 'DECLARE', 'SET', 'IF', 'ELSE', 'END', 'BEGIN', 'CREATE', 'DROP', 'DELETE', 'MERGE', 'INSERT', 'UPDATE'].some((k) => this.isKw(k));
  }

  private declare(): Statement {
    this.i++;
    const vars: Array<{ name: string; type: SqlType; init?: Expr }> = [];
    do {
      const name = this.variable();
      this.acceptKw('AS');
      const type = this.dataType();
      const init = this.acceptOp('=') ? this.expr() : undefined;
      vars.push({ name, type, ...(init ? { init } : {}) });
    } while (this.acceptOp(','));
    return { k: 'declare', vars };
  }

  private set(): Statement {
    this.i++;
    if (this.peek()?.t === 'var') {
      const name = this.variable();
      this.op('=');
      return { k: 'setVar', name, value: this.expr() };
    }
    if (this.acceptKw('TRANSACTION')) {
      this.kw('ISOLATION');
      this.kw('LEVEL');
      const words: string[] = [];
      while (this.peek()?.t === 'id' && !this.atStatementEnd()) words.push(this.peek()!.v as string), this.i++;
      const level = words.join(' ').toUpperCase();
      if (!['READ UNCOMMITTED', 'READ COMMITTED', 'REPEATABLE READ', 'SNAPSHOT', 'SERIALIZABLE'].includes(level)) this.fail();
      return { k: 'setOption', option: 'TRANSACTION ISOLATION LEVEL', value: level };
    }
    const t = this.peek();
    if (t?.t !== 'id') this.fail();
    const option = t.v.toUpperCase();
    this.i++;
    const v = this.peek();
    if (v === undefined) this.fail();
    if (v.t === 'id' || v.t === 'num' || v.t === 'str') {
      this.i++;
      return { k: 'setOption', option, value: String(v.v) };
    }
    return this.fail();
  }

  private ifStatement(): Statement {
    this.i++;
    const cond = this.expr();
    const then = this.statement();
    this.acceptOp(';');
    const otherwise = this.acceptKw('ELSE') ? this.statement() : undefined;
    return { k: 'if', cond, then, ...(otherwise ? { else: otherwise } : {}) };
  }

  private create(): Statement {
    this.i++;
    if (this.acceptKw('SCHEMA')) {
      const name = this.ident();
      if (this.acceptKw('AUTHORIZATION')) this.ident();
      // CREATE SCHEMA must be the only statement in the batch.
      this.acceptOp(';');
      if (!this.done()) this.fail();
      return { k: 'createSchema', name };
    }
    if (!this.acceptKw('TABLE')) this.fail();
    const name = this.multipart();
    this.op('(');
    const columns: ColumnSpec[] = [];
    let primaryKey: string[] = [];
    for (;;) {
      if (this.isKw('CONSTRAINT') || this.isKw('PRIMARY')) {
        if (this.acceptKw('CONSTRAINT')) this.ident();
        this.kw('PRIMARY');
        this.kw('KEY');
        this.acceptKw('CLUSTERED') || this.acceptKw('NONCLUSTERED');
        this.op('(');
        primaryKey = [this.ident()];
        while (this.acceptOp(',')) primaryKey.push(this.ident());
        this.op(')');
      } else {
        const col: ColumnSpec = { name: this.ident(), type: this.dataType(), nullable: true };
        for (;;) {
          if (this.acceptKw('NULL')) col.nullable = true;
          else if (this.isKw('NOT') && this.isKw('NULL', 1)) (this.i += 2), (col.nullable = false);
          else if (this.isKw('CONSTRAINT') && this.isKw('DEFAULT', 2)) {
            this.i++;
            this.ident();
          } else if (this.acceptKw('DEFAULT')) col.defaultExpr = this.primary();
          else if (this.isKw('PRIMARY')) {
            this.i++;
            this.kw('KEY');
            primaryKey = [col.name];
            col.nullable = false;
          } else break;
        }
        columns.push(col);
      }
      if (this.acceptOp(',')) continue;
      this.op(')');
      break;
    }
    return { k: 'createTable', name, columns, primaryKey };
  }

  private drop(): Statement {
    this.i++;
    this.kw('TABLE');
    let ifExists = false;
    if (this.isKw('IF') && this.isKw('EXISTS', 1)) {
      this.i += 2;
      ifExists = true;
    }
    return { k: 'dropTable', name: this.multipart(), ifExists };
  }

  private deleteStatement(): Statement {
    this.i++;
    this.acceptKw('FROM');
    const name = this.multipart();
    const where = this.acceptKw('WHERE') ? this.expr() : undefined;
    return { k: 'delete', name, ...(where ? { where } : {}) };
  }

  private merge(): Statement {
    this.i++;
    this.acceptKw('INTO');
    const target = this.multipart();
    this.tableHints();
    const alias = this.alias();
    this.kw('USING');
    const source = this.source();
    this.kw('ON');
    const on = this.expr();
    const out: Extract<Statement, { k: 'merge' }> = { k: 'merge', target, ...(alias ? { alias } : {}), source, on };
    while (this.acceptKw('WHEN')) {
      if (this.acceptKw('MATCHED')) {
        const cond = this.acceptKw('AND') ? this.expr() : undefined;
        this.kw('THEN');
        this.kw('UPDATE');
        this.kw('SET');
        const set: Array<[string, Expr]> = [];
        do {
          const col = this.multipart().at(-1)!;
          this.op('=');
          set.push([col, this.expr()]);
        } while (this.acceptOp(','));
        out.matched = { ...(cond ? { cond } : {}), set };
      } else {
        this.kw('NOT');
        this.kw('MATCHED');
        if (this.acceptKw('BY')) this.kw('TARGET');
        this.kw('THEN');
        this.kw('INSERT');
        this.op('(');
        const columns = [this.ident()];
        while (this.acceptOp(',')) columns.push(this.ident());
        this.op(')');
        this.kw('VALUES');
        this.op('(');
        const values = [this.expr()];
        while (this.acceptOp(',')) values.push(this.expr());
        this.op(')');
        out.notMatched = { columns, values };
      }
    }
    // MERGE must be terminated by a semicolon (Msg 10713).
    if (!this.isOp(';')) throw new SqlServerError(10713, 'A MERGE statement must be terminated by a semi-colon (;).', 15);
    return out;
  }

  private tableHints(): string[] {
    const hints: string[] = [];
    if (this.isKw('WITH') && this.isOp('(', 1)) {
      this.i += 2;
      do hints.push(this.ident().toUpperCase());
      while (this.acceptOp(','));
      this.op(')');
    }
    return hints;
  }

  private alias(): string | undefined {
    if (this.acceptKw('AS')) return this.ident();
    if (this.isIdent() && !['WITH', 'USING', 'ON', 'WHERE', 'JOIN', 'LEFT', 'INNER', 'ORDER', 'CROSS', 'OUTER', 'GROUP', 'WHEN'].some((k) => this.isKw(k))) return this.ident();
    return undefined;
  }

  select(): Select {
    this.kw('SELECT');
    const q: Select = { k: 'select', items: [], joins: [], orderBy: [] };
    if (this.acceptKw('TOP')) {
      if (this.acceptOp('(')) {
        q.top = this.expr();
        this.op(')');
      } else {
        const t = this.peek();
        if (t?.t !== 'num') this.fail();
        this.i++;
        q.top = { k: 'lit', v: Number(t.v), type: { name: 'bigint' } };
      }
    }
    do {
      if (this.isOp('*')) {
        this.i++;
        q.items.push({ expr: { k: 'star' } });
        continue;
      }
      if (this.isIdent() && this.isOp('.', 1) && this.isOp('*', 2)) {
        const qualifier = this.ident();
        this.i += 2;
        q.items.push({ expr: { k: 'star', qualifier } });
        continue;
      }
      const expr = this.expr();
      let alias: string | undefined;
      if (this.acceptKw('AS')) alias = this.ident();
      else if (this.isIdent() && !['FROM', 'WHERE', 'ORDER'].some((k) => this.isKw(k))) alias = this.ident();
      else if (this.peek()?.t === 'str' && this.isKw('AS', -1)) alias = String(this.peek()!.v);
      q.items.push({ expr, ...(alias !== undefined ? { alias } : {}) });
    } while (this.acceptOp(','));
    if (this.acceptKw('FROM')) {
      q.from = this.source();
      for (;;) {
        let kind: 'inner' | 'left';
        if (this.acceptKw('JOIN')) kind = 'inner';
        else if (this.isKw('INNER') && this.isKw('JOIN', 1)) (this.i += 2), (kind = 'inner');
        else if (this.isKw('LEFT')) {
          this.i++;
          this.acceptKw('OUTER');
          this.kw('JOIN');
          kind = 'left';
        } else break;
        const source = this.source();
        this.kw('ON');
        q.joins.push({ kind, source, on: this.expr() });
      }
    }
    if (this.acceptKw('WHERE')) q.where = this.expr();
    if (this.isKw('ORDER')) {
      this.i++;
      this.kw('BY');
      do {
        const expr = this.expr();
        const desc = this.acceptKw('DESC');
        if (!desc) this.acceptKw('ASC');
        q.orderBy.push({ expr, desc });
      } while (this.acceptOp(','));
    }
    return q;
  }

  private source(): Source {
    if (this.acceptOp('(')) {
      const q = this.select();
      this.op(')');
      const alias = this.alias();
      if (alias === undefined) this.fail();
      return { k: 'derived', q, alias };
    }
    if (this.isKw('OPENJSON', 0) && this.isOp('(', 1)) {
      this.i += 2;
      const json = this.expr();
      const path = this.acceptOp(',') ? this.expr() : undefined;
      this.op(')');
      const cols: Array<{ name: string; type: SqlType; path?: string }> = [];
      if (this.acceptKw('WITH')) {
        this.op('(');
        do {
          const name = this.ident();
          const type = this.dataType();
          const p = this.peek();
          let colPath: string | undefined;
          if (p?.t === 'str') {
            colPath = p.v;
            this.i++;
          }
          cols.push({ name, type, ...(colPath !== undefined ? { path: colPath } : {}) });
        } while (this.acceptOp(','));
        this.op(')');
      }
      const alias = this.alias();
      return { k: 'openjson', json, ...(path ? { path } : {}), with: cols, ...(alias ? { alias } : {}) };
    }
    const name = this.multipart();
    if (this.acceptOp('(')) {
      const args: Expr[] = [];
      if (!this.isOp(')')) {
        do args.push(this.expr());
        while (this.acceptOp(','));
      }
      this.op(')');
      const alias = this.alias();
      return { k: 'tvf', name, args, ...(alias ? { alias } : {}) };
    }
    let hints = this.tableHints();
    const alias = this.alias();
    if (hints.length === 0) hints = this.tableHints();
    return { k: 'table', name, hints, ...(alias ? { alias } : {}) };
  }

  dataType(): SqlType {
    const raw = this.ident();
    const lower = raw.toLowerCase();
    const alias = TYPE_ALIASES[lower];
    if (alias) return { ...alias };
    if (!TYPE_NAMES.has(lower)) throw new SqlServerError(2715, `Column, parameter, or variable #1: Cannot find data type ${raw}.`);
    const type: SqlType = { name: lower as SqlTypeName };
    if (this.acceptOp('(')) {
      if (this.acceptKw('MAX')) {
        if (!['varchar', 'nvarchar', 'varbinary'].includes(lower)) this.fail();
        type.length = 'max';
      } else {
        const a = this.peek();
        if (a?.t !== 'num') this.fail();
        this.i++;
        const first = Number(a.v);
        if (lower === 'decimal' || lower === 'numeric') {
          type.precision = first;
          type.scale = this.acceptOp(',') ? Number(this.num()) : 0;
        } else if (['datetime2', 'time', 'datetimeoffset'].includes(lower)) type.scale = first;
        else type.length = first;
      }
      this.op(')');
    } else if (['varchar', 'nvarchar', 'char', 'nchar', 'binary', 'varbinary'].includes(lower)) {
      type.length = 1;
    } else if (lower === 'decimal' || lower === 'numeric') {
      type.precision = 18;
      type.scale = 0;
    } else if (['datetime2', 'time', 'datetimeoffset'].includes(lower)) type.scale = 7;
    if (typeof type.length === 'number' && type.length > (lower.startsWith('n') ? 4000 : 8000)) {
      throw new SqlServerError(2717, `The size (${type.length}) given to the type '${lower}' exceeds the maximum allowed (${lower.startsWith('n') ? 4000 : 8000}).`);
    }
    return type;
  }

  private num(): string {
    const t = this.peek();
    if (t?.t !== 'num') this.fail();
    this.i++;
    return t.v;
  }

  // -- expressions, by precedence: OR < AND < NOT < comparison < + - < * / % < unary --
  expr(): Expr {
    let l = this.and();
    while (this.acceptKw('OR')) l = { k: 'bin', op: 'OR', l, r: this.and() };
    return l;
  }
  private and(): Expr {
    let l = this.not();
    while (this.acceptKw('AND')) l = { k: 'bin', op: 'AND', l, r: this.not() };
    return l;
  }
  private not(): Expr {
    if (this.acceptKw('NOT')) return { k: 'not', e: this.not() };
    return this.comparison();
  }
  private comparison(): Expr {
    if (this.isKw('EXISTS')) {
      this.i++;
      this.op('(');
      const q = this.select();
      this.op(')');
      return { k: 'exists', q };
    }
    const l = this.additive();
    const t = this.peek();
    if (t?.t === 'op' && ['=', '<>', '!=', '<', '>', '<=', '>='].includes(t.v)) {
      this.i++;
      return { k: 'bin', op: t.v === '!=' ? '<>' : t.v, l, r: this.additive() };
    }
    if (this.acceptKw('IS')) {
      const not = this.acceptKw('NOT');
      this.kw('NULL');
      return { k: 'isnull', e: l, not };
    }
    const not = this.isKw('NOT') && (this.isKw('LIKE', 1) || this.isKw('IN', 1)) ? (this.i++, true) : false;
    if (this.acceptKw('LIKE')) return { k: 'like', l, r: this.additive(), not };
    if (this.acceptKw('IN')) {
      this.op('(');
      const list = [this.expr()];
      while (this.acceptOp(',')) list.push(this.expr());
      this.op(')');
      return { k: 'in', e: l, list, not };
    }
    return l;
  }
  private additive(): Expr {
    let l = this.multiplicative();
    for (;;) {
      const t = this.peek();
      if (t?.t === 'op' && (t.v === '+' || t.v === '-')) {
        this.i++;
        l = { k: 'bin', op: t.v, l, r: this.multiplicative() };
      } else return l;
    }
  }
  private multiplicative(): Expr {
    let l = this.unary();
    for (;;) {
      const t = this.peek();
      if (t?.t === 'op' && (t.v === '*' || t.v === '/' || t.v === '%')) {
        this.i++;
        l = { k: 'bin', op: t.v, l, r: this.unary() };
      } else return l;
    }
  }
  private unary(): Expr {
    if (this.acceptOp('-')) return { k: 'neg', e: this.unary() };
    if (this.acceptOp('+')) return this.unary();
    return this.primary();
  }

  primary(): Expr {
    const t = this.peek();
    if (t === undefined) this.fail();
    switch (t.t) {
      case 'str':
        this.i++;
        return { k: 'lit', v: t.v, type: { name: t.n ? 'nvarchar' : 'varchar', length: Math.max(1, t.v.length) } };
      case 'num':
        this.i++;
        return t.v.includes('.') ? { k: 'lit', v: t.v, type: { name: 'numeric', precision: 38, scale: t.v.split('.')[1]!.length } } : { k: 'lit', v: Number(t.v), type: { name: Number(t.v) > 2147483647 ? 'bigint' : 'int' } };
      case 'hex':
        this.i++;
        return { k: 'lit', v: t.v, type: { name: 'varbinary', length: Math.max(1, t.v.length) } };
      case 'var':
        this.i++;
        return { k: 'var', name: t.v };
      case 'op':
        if (t.v === '(') {
          this.i++;
          if (this.isKw('SELECT')) {
            const q = this.select();
            this.op(')');
            return { k: 'sub', q };
          }
          const e = this.expr();
          this.op(')');
          return e;
        }
        return this.fail();
      case 'id': {
        const word = t.quoted ? '' : t.v.toUpperCase();
        if (word === 'NULL') {
          this.i++;
          return { k: 'lit', v: null, type: { name: 'int' } };
        }
        if (word === 'CASE') return this.caseExpr();
        if (word === 'CAST' || word === 'TRY_CAST') {
          this.i++;
          this.op('(');
          const expr = this.expr();
          this.kw('AS');
          const type = this.dataType();
          this.op(')');
          return { k: 'convert', type, expr };
        }
        if (word === 'CONVERT' || word === 'TRY_CONVERT') {
          this.i++;
          this.op('(');
          const type = this.dataType();
          this.op(',');
          const expr = this.expr();
          const style = this.acceptOp(',') ? Number(this.num()) : undefined;
          this.op(')');
          return { k: 'convert', type, expr, ...(style !== undefined ? { style } : {}) };
        }
        // Functions callable by name although their names are keywords elsewhere.
        if ((word === 'LEFT' || word === 'RIGHT') && this.isOp('(', 1)) {
          this.i++;
          return { k: 'call', name: [t.v], args: this.args() };
        }
        const name = this.multipart();
        if (this.isOp('(')) return { k: 'call', name, args: this.args() };
        return { k: 'col', parts: name };
      }
    }
    return this.fail();
  }

  private args(): Expr[] {
    this.op('(');
    const args: Expr[] = [];
    if (this.isOp('*')) {
      this.i++;
      args.push({ k: 'star' });
    } else if (!this.isOp(')')) {
      do args.push(this.expr());
      while (this.acceptOp(','));
    }
    this.op(')');
    return args;
  }

  private caseExpr(): Expr {
    this.i++;
    const operand = this.isKw('WHEN') ? undefined : this.expr();
    const whens: Array<[Expr, Expr]> = [];
    while (this.acceptKw('WHEN')) {
      const w = this.expr();
      this.kw('THEN');
      whens.push([w, this.expr()]);
    }
    if (whens.length === 0) this.fail();
    const otherwise = this.acceptKw('ELSE') ? this.expr() : undefined;
    this.kw('END');
    return { k: 'case', ...(operand ? { operand } : {}), whens, ...(otherwise ? { else: otherwise } : {}) };
  }
}
