/**
 * The contract between the TDS test server (server.ts: the wire, MS-TDS 7.4 over node:net) and what
 * answers statements behind it (the CDC model's T-SQL front). The wire side knows packets, tokens and
 * type encodings; the backend knows T-SQL and the model. Neither imports dstream's lib/: the server
 * is tested by the real `mssql`/tedious client alone.
 */

/** SQL Server type names as they appear in COLMETADATA and in sp_executesql parameter declarations. */
export type SqlTypeName =
  | 'bit' | 'tinyint' | 'smallint' | 'int' | 'bigint'
  | 'decimal' | 'numeric' | 'float' | 'real' | 'money'
  | 'nvarchar' | 'varchar' | 'nchar' | 'char'
  | 'varbinary' | 'binary'
  | 'datetime2' | 'datetime' | 'date' | 'time' | 'datetimeoffset'
  | 'uniqueidentifier';

export interface SqlType {
  name: SqlTypeName;
  /** Characters (n*, var*) or bytes (binary types); 'max' for the (max) types. */
  length?: number | 'max';
  precision?: number;
  /** decimal/numeric scale; fractional-second digits for datetime2/time/datetimeoffset. */
  scale?: number;
}

export interface ColumnDef {
  name: string;
  type: SqlType;
  nullable?: boolean;
}

/**
 * Values in both directions: null; number (int types, float, real, bit as 0/1 is also accepted);
 * bigint or string for bigint; string for character types and for decimal/numeric/money (exact text);
 * boolean for bit; Buffer for binary types; Date for datetime types (UTC).
 */
export type SqlValue = null | number | bigint | string | boolean | Buffer | Date;

/** A parameter decoded from an RPC request (sp_executesql), name without '@'. */
export interface Param {
  name: string;
  type: SqlType;
  value: SqlValue;
  output?: boolean;
}

/** One piece of what a batch produces, sent to the client in the order yielded. */
export type BatchOutput =
  /** COLMETADATA, then a ROW/NBCROW per row, then DONE(INPROC) with the row count. Rows are pulled one at a time under socket backpressure. */
  | { columns: ColumnDef[]; rows: Iterable<SqlValue[]> | AsyncIterable<SqlValue[]> }
  /** DONE(INPROC) with a row count, for statements without a result set (INSERT, UPDATE, MERGE, DELETE). */
  | { rowCount: number }
  /** RETURNSTATUS (EXEC @r = proc). */
  | { returnStatus: number }
  /** INFO token (PRINT, warnings). */
  | { info: { number: number; message: string; severity?: number } };

/** An error SQL Server would send: ERROR token with its number, state and class, then DONE with the error bit. */
export class SqlServerError extends Error {
  constructor(
    readonly number: number,
    message: string,
    readonly severity = 16,
    readonly state = 1,
    readonly lineNumber = 1,
  ) {
    super(message);
    this.name = 'SqlServerError';
  }
}

export interface SessionInfo {
  /** SPID, as sent in the packet header and in LOGINACK's environment. */
  readonly id: number;
  readonly user: string;
  database: string;
}

export interface ExecuteContext {
  session: SessionInfo;
  /** Aborted when the client sends ATTENTION for this request or the connection closes. */
  signal: AbortSignal;
  /** 'batch' for SQL_BATCH, 'rpc' for sp_executesql. */
  via: 'batch' | 'rpc';
}

export interface TdsBackend {
  /** Throws SqlServerError(18456, "Login failed for user '<user>'.") on a bad login; returns the session's database. */
  login(user: string, password: string, database: string | undefined): { database: string };
  /**
   * One batch (or sp_executesql statement): yields its outputs; a thrown SqlServerError becomes ERROR + DONE(error).
   * Every connection sends, besides the application's statements: tedious's session setup batch right
   * after login (`set ansi_nulls on` ... `set xact_abort off`, one SET per line), and mssql's pool check
   * `SELECT 1;` (via sp_executesql) each time it lends a connection, unless `validateConnection` is off.
   */
  execute(sql: string, params: Param[], ctx: ExecuteContext): AsyncIterable<BatchOutput>;
  /** The connection of this session closed (client quit, reset, or dropped by a test). */
  sessionClosed?(session: SessionInfo): void;
}
