/**
 * The rows of one statement as a Readable, read straight from a tedious Request on a connection
 * lent by the `mssql` pool. The pool still makes, checks, replaces and closes the connections;
 * only the rows skip the `mssql` Request, which copies every value of every row through its type
 * corrections and re-emits each row as an event before a stream of its own buffers it.
 */
import { createRequire } from 'node:module';
import { Readable } from 'node:stream';
import type mssqlModule from 'mssql';
import type * as Tedious from 'tedious';

export type TediousModule = typeof Tedious;
type Connection = Tedious.Connection;
type DataType = (typeof Tedious.TYPES)[keyof typeof Tedious.TYPES];

/** A statement parameter in tedious's terms: its type, its value, and the type's length if it has one. */
export type TdsParam = [type: DataType, value: unknown, length?: number];

/**
 * tedious as `mssql` loads it: the Request must be of the tedious that made the pool's
 * connections, which is mssql's own dependency wherever the package manager put it.
 */
export function loadTedious(): TediousModule {
  const fromMssql = createRequire(createRequire(import.meta.url).resolve('mssql'));
  return fromMssql('tedious') as TediousModule;
}

/**
 * ConnectionPool.acquire()/release(): how the driver's own Request, Transaction and
 * PreparedStatement borrow a tedious connection (@types/mssql does not declare them).
 */
interface LendingPool {
  readonly connected: boolean;
  acquire(requester: object, callback: (err: Error | null, connection?: Connection) => void): unknown;
  release(connection: Connection): unknown;
}

/** A column as tedious hands a row over: its value, already decoded, and its metadata. */
interface ColumnValue {
  value: unknown;
  metadata: { colName: string };
}

export interface RowStreamOptions {
  /** Each row an array of its values in select-list order; otherwise an object keyed by column name. */
  arrays: boolean;
  /** Rows buffered before the request is paused (the driver stops reading its socket). */
  high: number;
  /** Rows left in the buffer when the request resumes: it then refills in one run, not row by row. */
  low: number;
}

/**
 * Every value as the `mssql` Request would give it: tedious decodes each type and `mssql`
 * changes none of the types a dstream statement selects (it converts only CLR types, which
 * sql.ts selectExpression turns into text, and types an application registered a handler for).
 * Errors are the driver's RequestError as a streamed `mssql` Request reports them: the SQL Server
 * error number in `number`, the tedious code (ETIMEOUT, ECANCEL, ESOCKET ...) in `code`.
 *
 * Destroyed before its end, the stream cancels the request (ATTENTION). The connection goes back to
 * the pool exactly once, when tedious reports the request finished (ended, failed, cancelled and
 * acknowledged, or its connection lost), or at once when the stream was destroyed before it
 * had one.
 */
export function streamRows(pool: mssqlModule.ConnectionPool, tds: TediousModule, mssql: typeof mssqlModule, text: string, params: Record<string, TdsParam>, o: RowStreamOptions): Readable {
  return new RowStream(pool as unknown as LendingPool, tds, mssql, text, params, o);
}

class RowStream extends Readable {
  private connection: Connection | undefined;
  private request: Tedious.Request | undefined;
  /** tedious called the request back: nothing left to cancel. */
  private finished = false;
  /**
   * Rows buffered before the request is paused: one until a consumer listens ('readable' or
   * 'data') or reads, then `o.high`. A read opened ahead of the merge that takes it (windows.ts) thus holds
   * its first row, which proves the statement under way, and not `o.high` rows that would wait
   * through a whole window and outlive the young generation's collections (measured over the TDS
   * test server's 200k-row backlog: half the bytes promoted per collection).
   */
  private high = 1;

  constructor(
    private readonly pool: LendingPool,
    private readonly tds: TediousModule,
    private readonly mssql: typeof mssqlModule,
    private readonly text: string,
    private readonly params: Record<string, TdsParam>,
    private readonly o: RowStreamOptions,
  ) {
    // The Readable's own mark is the low one: below it, read() asks for more (_read resumes).
    super({ objectMode: true, highWaterMark: o.low });
    this.on('newListener', this.listening);
    if (!pool.connected) {
      // As the driver's Request says it for a pool that is not (or no longer) connected.
      process.nextTick(() => this.destroy(new mssql.ConnectionError('Connection is closed.', 'ECONNCLOSED')));
      return;
    }
    // Sent at once, as a query() is: the server prepares the rows while the reader sets up.
    pool.acquire(this, (err, connection) => {
      if (err || connection === undefined) return this.destroy(err ?? new Error('the pool lent no connection'));
      if (this.destroyed) return void pool.release(connection);
      this.connection = connection;
      this.send(connection);
    });
  }

  private send(connection: Connection): void {
    const arrays = this.o.arrays;
    const request = new this.tds.Request(this.text, (err) => this.finish(err ?? undefined));
    this.request = request;
    request.on('row', (columns: ColumnValue[]) => {
      let row: unknown[] | Record<string, unknown>;
      if (arrays) {
        const values = new Array<unknown>(columns.length);
        for (let i = 0; i < columns.length; i++) values[i] = columns[i]!.value;
        row = values;
      } else {
        const named: Record<string, unknown> = {};
        for (const c of columns) named[c.metadata.colName] = c.value;
        row = named;
      }
      this.push(row);
      // push() says false from the low mark on; the request runs on to the high one.
      if (this.readableLength >= this.high) request.pause();
    });
    try {
      for (const [name, [type, value, length]] of Object.entries(this.params)) request.addParameter(name, type, value, length === undefined ? undefined : { length });
      connection.execSql(request);
    } catch (err) {
      // Nothing was sent: tedious will not call the request back.
      this.finish(err as Error);
    }
  }

  /** tedious is done with the request (or never started it): the connection goes back, once. */
  private finish(err: Error | undefined): void {
    if (this.finished) return;
    this.finished = true;
    const connection = this.connection;
    this.connection = undefined;
    if (connection !== undefined) this.pool.release(connection);
    if (this.destroyed) return;
    if (err !== undefined) this.destroy(this.driverError(err));
    else this.push(null);
  }

  /** The error as a streamed `mssql` Request reports it: its first, when tedious gathered several. */
  private driverError(err: Error): Error {
    const first = err instanceof AggregateError && err.errors.length > 0 ? (err.errors[0] as Error) : err;
    // A SQL Server error (an ERROR token) carries its number, state, class and line.
    if (typeof (first as { number?: unknown }).number === 'number') return new this.mssql.RequestError(Object.assign(new Error(first.message), { info: first }), 'EREQUEST');
    return new this.mssql.RequestError(first, 'EREQUEST');
  }

  /** A consumer listens: the request is no longer held at its first row. */
  private readonly listening = (event: string | symbol): void => {
    if (event === 'readable' || event === 'data') this.consumed();
  };

  private consumed(): void {
    if (this.high === this.o.high) return;
    this.high = this.o.high;
    this.off('newListener', this.listening);
    // The stream asked for more (_read) while the request was held, and waits for a push.
    if (this.request?.paused) this.request.resume();
  }

  /** A consumer may also just call read(): read(0) is the stream's own asking, not a consumer's. */
  override read(size?: number): unknown {
    if (size !== 0 && this.high !== this.o.high) this.consumed();
    return super.read(size);
  }

  override _read(): void {
    // Called once the buffer is below the low mark (and by the stream itself before anyone reads:
    // a request held at its first row stays paused until a consumer listens).
    if (this.request?.paused && this.readableLength < this.high) this.request.resume();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    // Sent, not yet finished: stop it (ATTENTION); tedious calls it back once the server has
    // acknowledged, and the connection goes back then.
    if (this.request !== undefined && !this.finished) this.request.cancel();
    callback(err);
  }
}
