/**
 * The TDS test server through the real `mssql`/tedious client: login, batches, sp_executesql with
 * typed parameters, result types, streaming under backpressure, errors, cancel and wire faults.
 * The backend here is a few lines of test code, so what is asserted is what tedious decoded
 * from the bytes the server wrote.
 */
import { once } from 'node:events';
import mssql from 'mssql';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTdsServer, type TdsServer } from '../support/tds/server.js';
import { SqlServerError, type BatchOutput, type ColumnDef, type ExecuteContext, type Param, type SqlValue, type TdsBackend } from '../support/tds/types.js';

type Handler = (sql: string, params: Param[], ctx: ExecuteContext) => AsyncIterable<BatchOutput>;

const PASSWORD = 'S3cret-pw!';
let handler: Handler | undefined;
const closedSessions: number[] = [];

const backend: TdsBackend = {
  login(user, password, database) {
    if (password !== PASSWORD) throw new SqlServerError(18456, `Login failed for user '${user}'.`, 14, 1);
    return { database: database ?? 'master' };
  },
  async *execute(sql, params, ctx) {
    // tedious's session setup batch right after login, and mssql's pool check on each acquire
    if (/^\s*set\s/i.test(sql)) return;
    if (sql === 'SELECT 1;') return yield { columns: [{ name: '', type: { name: 'int' }, nullable: false }], rows: [[1]] };
    if (handler) return yield* handler(sql, params, ctx);
    if (sql === 'select 1 as one') return yield { columns: [{ name: 'one', type: { name: 'int' }, nullable: false }], rows: [[1]] };
    if (sql === 'select echo') return yield { columns: params.map((p) => ({ name: p.name, type: p.type })), rows: [params.map((p) => p.value)] };
    throw new SqlServerError(2812, `Could not find stored procedure '${sql.split(/\s/)[0]}'.`, 16, 62);
  },
  sessionClosed(session) {
    closedSessions.push(session.id);
  },
};

let server: TdsServer;
const pools: mssql.ConnectionPool[] = [];

async function connect(config: Partial<mssql.config> = {}, password = PASSWORD): Promise<mssql.ConnectionPool> {
  const parsed = mssql.ConnectionPool.parseConnectionString(server.connectionString({ database: 'shop', user: 'app', password }));
  const pool = new mssql.ConnectionPool({ ...parsed, ...config, options: { ...parsed.options, useUTC: true, ...config.options } });
  // A pool re-emits its idle connections' socket errors; dstream listens the same way.
  pool.on('error', () => undefined);
  pools.push(pool);
  await pool.connect();
  return pool;
}

async function failure(p: Promise<unknown>): Promise<Error & { code?: string; number?: number }> {
  try {
    await p;
  } catch (err) {
    return err as Error & { code?: string; number?: number };
  }
  throw new Error('expected a failure');
}

beforeAll(async () => {
  server = await startTdsServer({ backend });
});
afterEach(async () => {
  handler = undefined;
  server.silent(false);
  server.refuseLogins(false);
  await Promise.all(pools.splice(0).map((p) => p.close().catch(() => undefined)));
});
afterAll(async () => {
  await server.close();
});

describe('login', () => {
  it('logs in with the right password and lists the session with its database', async () => {
    const pool = await connect();
    const r = await pool.request().query('select 1 as one');
    expect(r.recordset).toEqual([{ one: 1 }]);
    expect(server.sessions()).toEqual(expect.arrayContaining([expect.objectContaining({ user: 'app', database: 'shop' })]));
  });

  it('refuses a wrong password with error 18456 and never echoes the password', async () => {
    const err = await failure(connect({}, 'wrong-password-123'));
    expect(err.message).toBe("Login failed for user 'app'.");
    expect(err.code).toBe('ELOGIN');
    expect(JSON.stringify(err, Object.getOwnPropertyNames(err))).not.toContain('wrong-password-123');
    expect(server.sessions()).toEqual([]);
  });
});

describe('requests', () => {
  it('runs sp_executesql with int, nvarchar and varbinary parameters decoded as tedious sent them', async () => {
    const pool = await connect();
    const lsn = Buffer.from('0000002a000001f40003', 'hex');
    const r = await pool.request()
      .input('n', mssql.Int, -42)
      .input('s', mssql.NVarChar(50), 'héllo ✓')
      .input('b', mssql.VarBinary(10), lsn)
      .query('select echo');
    expect(r.recordset).toEqual([{ n: -42, s: 'héllo ✓', b: lsn }]);
  });
});

describe('parameters', () => {
  const lsn = Buffer.from('0000002a000001f40003', 'hex');
  const big = Buffer.alloc(50_000, 7);
  const cases: [string, mssql.ISqlType | (() => mssql.ISqlType), unknown, unknown?][] = [
    ['int', mssql.Int, -2147483648],
    ['bigint', mssql.BigInt, '9007199254740993'],
    ['bit', mssql.Bit, true],
    ['tinyint', mssql.TinyInt, 255],
    ['smallint', mssql.SmallInt, -32768],
    ['nvarchar', mssql.NVarChar(50), 'héllo ✓ 😀'],
    ['nvarcharmax', mssql.NVarChar(mssql.MAX), 'ü'.repeat(20_000)],
    ['varchar', mssql.VarChar(20), 'café €5'],
    ['varcharmax', mssql.VarChar(mssql.MAX), 'x'.repeat(9_000)],
    ['nchar', mssql.NChar(5), 'ab', 'ab   '],
    ['char', mssql.Char(5), 'xy', 'xy   '],
    // @types/mssql leaves out Binary's length; mssql and tedious take it.
    ['binary', (mssql.Binary as unknown as (length: number) => mssql.ISqlType)(10), lsn],
    ['varbinary', mssql.VarBinary(10), lsn],
    ['varbinarymax', mssql.VarBinary(mssql.MAX), big],
    ['datetime2', mssql.DateTime2(7), new Date('2024-02-29T12:34:56.789Z')],
    ['datetime', mssql.DateTime, new Date('1999-12-31T23:59:59.997Z')],
    ['date', mssql.Date, new Date('2024-02-29T00:00:00Z')],
    ['time', mssql.Time(7), new Date('1970-01-01T13:14:15.123Z')],
    ['datetimeoffset', mssql.DateTimeOffset(7), new Date('2030-06-01T01:02:03.456Z')],
    ['decimal', mssql.Decimal(18, 4), 12345.6789],
    ['numeric', mssql.Numeric(10, 2), -12.5],
    ['uniqueidentifier', mssql.UniqueIdentifier, 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'],
    ['float', mssql.Float, 1.5e300],
    ['real', mssql.Real, 3.5],
    ['money', mssql.Money, -922337203685.4775],
  ];

  it('echoes every parameter type back as tedious encoded it (values, then all NULL)', async () => {
    const pool = await connect();
    const seen: Param[][] = [];
    handler = async function* (sql, params) {
      if (sql !== 'select echo') throw new SqlServerError(102, 'Incorrect syntax.');
      seen.push(params);
      yield { columns: params.map((p) => ({ name: p.name, type: p.type })), rows: [params.map((p) => p.value)] };
    };
    const values = pool.request();
    const nulls = pool.request();
    for (const [name, type, value] of cases) {
      values.input(name, type, value);
      nulls.input(name, type, null);
    }
    const [row] = (await values.query('select echo')).recordset;
    for (const [name, , value, expected] of cases) expect([name, row[name]]).toEqual([name, expected ?? value]);
    expect(seen[0]!.find((p) => p.name === 'bigint')!.value).toBe(9007199254740993n);
    expect(seen[0]!.find((p) => p.name === 'decimal')).toMatchObject({ type: { name: 'decimal', precision: 18, scale: 4 }, value: '12345.6789' });
    expect(seen[0]!.find((p) => p.name === 'nvarcharmax')!.type).toEqual({ name: 'nvarchar', length: 'max' });

    const [empty] = (await nulls.query('select echo')).recordset;
    expect(Object.entries(empty).filter(([, v]) => v !== null)).toEqual([]);
    expect(Object.keys(empty)).toHaveLength(cases.length);
  });

  it('sends SQL_BATCH for batch() and sp_executesql for query()', async () => {
    const pool = await connect();
    const via: string[] = [];
    handler = async function* (sql, _params, ctx) {
      via.push(`${ctx.via}:${sql}`);
      yield { rowCount: 3 };
    };
    const b = await pool.request().batch('delete from t');
    const q = await pool.request().input('x', mssql.Int, 1).query('delete from t where x = @x');
    expect(via).toEqual(['batch:delete from t', 'rpc:delete from t where x = @x']);
    expect(b.rowsAffected).toEqual([3]);
    expect(q.rowsAffected).toEqual([3]);
  });
});

describe('results', () => {
  const columns: ColumnDef[] = [
    { name: 'lsn', type: { name: 'binary', length: 10 } },
    { name: 'vb', type: { name: 'varbinary', length: 'max' } },
    { name: 'nv', type: { name: 'nvarchar', length: 128 } },
    { name: 'nvmax', type: { name: 'nvarchar', length: 'max' } },
    { name: 'v', type: { name: 'varchar', length: 50 } },
    { name: 'vmax', type: { name: 'varchar', length: 'max' } },
    { name: 'nc', type: { name: 'nchar', length: 4 } },
    { name: 'c', type: { name: 'char', length: 3 } },
    { name: 'bi', type: { name: 'bigint' } },
    { name: 'i', type: { name: 'int' } },
    { name: 'si', type: { name: 'smallint' } },
    { name: 'ti', type: { name: 'tinyint' } },
    { name: 'b', type: { name: 'bit' } },
    { name: 'd2', type: { name: 'datetime2', scale: 7 } },
    { name: 'd23', type: { name: 'datetime2', scale: 3 } },
    { name: 'dt', type: { name: 'datetime' } },
    { name: 'da', type: { name: 'date' } },
    { name: 'tm', type: { name: 'time', scale: 3 } },
    { name: 'dto', type: { name: 'datetimeoffset', scale: 7 } },
    { name: 'dec', type: { name: 'decimal', precision: 38, scale: 6 } },
    { name: 'num', type: { name: 'numeric', precision: 5, scale: 2 } },
    { name: 'f', type: { name: 'float' } },
    { name: 'r', type: { name: 'real' } },
    { name: 'm', type: { name: 'money' } },
    { name: 'g', type: { name: 'uniqueidentifier' } },
  ];
  const longText = 'ś'.repeat(30_000);
  const longBytes = Buffer.alloc(70_000, 0xab);
  const values: SqlValue[] = [
    Buffer.from('00000020000000a80001', 'hex'), longBytes, 'Zoë', longText, 'plain', 'v'.repeat(12_000), 'ab', 'x',
    '-9223372036854775808', 7, -3, 200, true,
    new Date('2024-01-02T03:04:05.123Z'), new Date('2024-01-02T03:04:05.123Z'), new Date('2024-01-02T03:04:05.123Z'),
    new Date('2024-01-02T00:00:00Z'), new Date('1970-01-01T23:59:59.999Z'), new Date('2024-01-02T03:04:05.123Z'),
    '1234567.891011', '-123.45', Math.PI, 0.5, '1234.5678', '6F9619FF-8B86-D011-B42D-00C04FC964FF',
  ];
  const expected = {
    lsn: values[0], vb: longBytes, nv: 'Zoë', nvmax: longText, v: 'plain', vmax: 'v'.repeat(12_000), nc: 'ab  ', c: 'x  ',
    bi: '-9223372036854775808', i: 7, si: -3, ti: 200, b: true,
    d2: values[13], d23: values[14], dt: values[15], da: values[16], tm: values[17], dto: values[18],
    dec: 1234567.891011, num: -123.45, f: Math.PI, r: 0.5, m: 1234.5678, g: '6F9619FF-8B86-D011-B42D-00C04FC964FF',
  };

  it('decodes every column type, NULLs in NBCROW, and (max) values spread over many packets', async () => {
    const pool = await connect();
    handler = async function* () {
      yield { columns, rows: [values, columns.map(() => null), values.map((v, i) => (i % 2 ? v : null))] };
      yield { columns: [{ name: 'n', type: { name: 'int' }, nullable: false }], rows: [[1], [2]] };
    };
    const r = await pool.request().query('select everything');
    const sets = r.recordsets as mssql.IRecordSet<Record<string, unknown>>[];
    expect(sets).toHaveLength(2);
    const [full, empty, half] = sets[0]!;
    expect(full).toEqual(expected);
    expect(Object.values(empty!).every((v) => v === null)).toBe(true);
    expect(Object.entries(half!)).toEqual(Object.entries(expected).map(([k, v], i) => [k, i % 2 ? v : null]));
    expect(sets[1]).toEqual([{ n: 1 }, { n: 2 }]);
    expect(r.rowsAffected).toEqual([3, 2]);
  });

  it('tells the client of a database change (USE) with ENVCHANGE', async () => {
    const pool = await connect({ pool: { max: 1 } });
    handler = async function* (sql, _params, ctx) {
      const m = /^use (\w+)$/.exec(sql);
      if (m) ctx.session.database = m[1]!;
      else yield { columns: [{ name: 'db', type: { name: 'nvarchar', length: 128 } }], rows: [[ctx.session.database]] };
    };
    const changes: string[] = [];
    pool.on('databaseChange' as never, () => undefined);
    const req = pool.request();
    req.on('info', (m: { number: number; message: string }) => changes.push(`${m.number} ${m.message}`));
    await req.batch('use other');
    expect(changes).toEqual(["5701 Changed database context to 'other'."]);
    expect((await pool.request().query('db_name()')).recordset).toEqual([{ db: 'other' }]);
    expect(server.sessions().map((s) => s.database)).toEqual(['other']);
  });
});

/** Rows made on demand, counting how many the server pulled. */
function counted(total: number, make: (i: number) => SqlValue[]) {
  const state = { pulled: 0 };
  const rows = (function* () {
    for (let i = 0; i < total; i++) {
      state.pulled++;
      yield make(i);
    }
  })();
  return { state, rows };
}

describe('streaming', () => {
  it('streams 200k rows to a slow toReadableStream() reader with the server holding a bounded buffer', async () => {
    const pool = await connect({ pool: { max: 1 } });
    const total = 200_000;
    const { state, rows } = counted(total, (i) => [i, `row number ${i} `.padEnd(100, '.'), Buffer.from([i & 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9])]);
    handler = async function* () {
      yield { columns: [{ name: 'id', type: { name: 'int' } }, { name: 'text', type: { name: 'nvarchar', length: 200 } }, { name: 'lsn', type: { name: 'binary', length: 10 } }], rows };
    };
    server.bufferedHighWater = 0;
    const req = pool.request();
    const stream = req.toReadableStream({ highWaterMark: 16 });
    void req.query('select stream');
    const stalled = once(server, 'backpressure');
    let received = 0;
    let lastId = -1;
    stream.on('data', (row: { id: number }) => {
      received++;
      lastId = row.id;
    });
    stream.pause();
    await stalled;
    // The client reads nothing: the server stopped pulling rows once the socket was full.
    const pulledAtStall = state.pulled;
    expect(pulledAtStall).toBeLessThan(total);
    expect(received).toBe(0);
    const ended = once(stream, 'end');
    stream.resume();
    await ended;
    expect(received).toBe(total);
    expect(lastId).toBe(total - 1);
    expect(state.pulled).toBe(total);
    // A few packets of rows per flush, never the result set: 200k rows are ~50 MB on the wire.
    expect(server.bufferedHighWater).toBeLessThan(256 * 1024);
  });
});

describe('errors', () => {
  it('surfaces the server error number, state and class, and the connection serves the next request', async () => {
    const pool = await connect({ pool: { max: 1 } });
    handler = async function* (sql) {
      if (sql === 'select * from nope') throw new SqlServerError(208, "Invalid object name 'nope'.", 16, 1, 3);
      if (sql === 'half') {
        yield { columns: [{ name: 'n', type: { name: 'int' } }], rows: [[1]] };
        throw new SqlServerError(8134, 'Divide by zero error encountered.', 16, 1);
      }
      yield { columns: [{ name: 'ok', type: { name: 'bit' } }], rows: [[true]] };
    };
    const err = (await failure(pool.request().query('select * from nope'))) as Error & { number: number; state: number; class: number; lineNumber: number };
    expect({ number: err.number, state: err.state, class: err.class, lineNumber: err.lineNumber, message: err.message })
      .toEqual({ number: 208, state: 1, class: 16, lineNumber: 3, message: "Invalid object name 'nope'." });
    const batchErr = (await failure(pool.request().batch('half'))) as Error & { number: number };
    expect(batchErr.number).toBe(8134);
    expect((await pool.request().query('fine')).recordset).toEqual([{ ok: true }]);
  });

  it('passes INFO messages, and the return status of a procedure called by name', async () => {
    const pool = await connect();
    const seen: string[] = [];
    handler = async function* (sql, params) {
      seen.push(`${sql} ${params.map((p) => `${p.name}=${String(p.value)}`).join(',')}`);
      yield { info: { number: 50000, message: 'hello from PRINT' } };
      yield { returnStatus: 7 };
    };
    const infos: string[] = [];
    const req = pool.request();
    req.on('info', (m: { number: number; message: string }) => infos.push(`${m.number} ${m.message}`));
    const r = await req.input('Resource', mssql.NVarChar(255), 'lease:t1').execute('sys.sp_getapplock');
    expect(seen).toEqual(['EXEC sys.sp_getapplock @Resource = @Resource Resource=lease:t1']);
    expect(infos).toEqual(['50000 hello from PRINT']);
    expect(r.returnValue).toBe(7);
  });
});

const intColumn: ColumnDef[] = [{ name: 'n', type: { name: 'int' } }];
const PAD = 'p'.repeat(200);
const okResult: BatchOutput = { columns: [{ name: 'ok', type: { name: 'bit' } }], rows: [[true]] };

/**
 * A backend for 'numbers' (up to `total` rows of ~400 bytes, so a few MB of socket buffers hold
 * thousands of them, not millions) and 'ok'; counts rows pulled and aborts.
 */
function numbersBackend(total = Number.POSITIVE_INFINITY) {
  const state = { pulled: 0, aborted: 0, finished: 0 };
  handler = async function* (sql, _params, ctx) {
    if (sql !== 'numbers') return yield okResult;
    ctx.signal.addEventListener('abort', () => state.aborted++);
    const rows = (function* () {
      try {
        for (let i = 0; i < total; i++) {
          state.pulled++;
          yield [i, PAD];
        }
      } finally {
        state.finished++;
      }
    })();
    yield { columns: [...intColumn, { name: 'pad', type: { name: 'nvarchar', length: 200 } }], rows };
  };
  return state;
}

/** Streams `sql` row by row, does `act` at row `at`, and returns the error the request ends with. */
async function streamFailing(pool: mssql.ConnectionPool, sql: string, at: number, act: (req: mssql.Request) => void) {
  const req = pool.request();
  req.stream = true;
  let rows = 0;
  req.on('row', () => {
    if (++rows === at) act(req);
  });
  const failed = once(req, 'error');
  void req.query(sql);
  const [err] = (await failed) as [Error & { code: string }];
  return err;
}

describe('cancel (ATTENTION)', () => {
  it('request.cancel() mid-stream: the backend is aborted and pulled no further, the connection runs the next query', async () => {
    const pool = await connect({ pool: { max: 1 } });
    const state = numbersBackend();
    const err = await streamFailing(pool, 'numbers', 1000, (req) => req.cancel());
    expect(err.code).toBe('ECANCEL');
    expect(state.aborted).toBe(1);
    expect(state.finished).toBe(1);
    const pulled = state.pulled;
    expect((await pool.request().query('ok')).recordset).toEqual([{ ok: true }]);
    expect(state.pulled).toBe(pulled);
    expect(server.sessions()).toHaveLength(1);
  });

  it('destroying a toReadableStream() lets the request run to its end; with cancel() it stops; either way the next query works', async () => {
    const pool = await connect({ pool: { max: 1 } });
    const total = 30_000;
    const state = numbersBackend(total);

    const runDestroyed = async (cancel: boolean) => {
      const req = pool.request();
      const stream = req.toReadableStream({ highWaterMark: 8 });
      const settled = new Promise<void>((resolve) => {
        req.on('done', () => resolve());
        req.on('error', () => resolve());
      });
      let seen = 0;
      stream.on('data', () => {
        if (++seen !== 100) return;
        stream.destroy();
        if (cancel) req.cancel();
      });
      stream.on('error', () => undefined);
      void req.query('numbers').catch(() => undefined);
      await settled;
    };

    await runDestroyed(false);
    expect(state).toMatchObject({ pulled: total, aborted: 0, finished: 1 });
    expect((await pool.request().query('ok')).recordset).toEqual([{ ok: true }]);

    state.pulled = 0;
    await runDestroyed(true);
    expect(state.aborted).toBe(1);
    expect(state.finished).toBe(2);
    expect(state.pulled).toBeLessThan(total);
    expect((await pool.request().query('ok')).recordset).toEqual([{ ok: true }]);
  });

  it('a first row later than requestTimeout: the driver times out, the backend is aborted, the connection is reused', async () => {
    const pool = await connect({ pool: { max: 1 }, requestTimeout: 300 });
    let aborted = 0;
    handler = async function* (sql, _params, ctx) {
      if (sql !== 'slow') return yield okResult;
      // The first row waits for the cancel the client sends when its timeout fires.
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
      aborted++;
      yield { columns: intColumn, rows: [[1]] };
    };
    const err = (await failure(pool.request().query('slow'))) as Error & { code: string };
    expect(err.code).toBe('ETIMEOUT');
    expect(aborted).toBe(1);
    expect((await pool.request().query('ok')).recordset).toEqual([{ ok: true }]);
    expect(server.sessions()).toHaveLength(1);
  });
});

describe('faults at the wire', () => {
  it('dropConnections() in the middle of a stream fails the request with a socket error; the pool reconnects', async () => {
    const pool = await connect({ pool: { max: 1 } });
    const state = numbersBackend();
    const [first] = server.sessions();
    const closed = new Promise<number>((resolve) => server.once('sessionClosed', (s: { id: number }) => resolve(s.id)));
    const err = await streamFailing(pool, 'numbers', 500, () => server.dropConnections());
    expect(['ECONNRESET', 'ESOCKET']).toContain(err.code);
    expect(await closed).toBe(first!.id);
    expect(state.aborted).toBe(1);
    expect((await pool.request().query('ok')).recordset).toEqual([{ ok: true }]);
    expect(server.sessions().map((s) => s.id)).not.toContain(first!.id);
  });

  it('a server that accepts TCP but never answers PRELOGIN: the connect timeout fires', async () => {
    server.silent(true);
    const err = await failure(connect({ connectionTimeout: 400 }));
    expect(err.code).toBe('ETIMEOUT');
    expect(server.sessions()).toEqual([]);
  });

  it('refused logins fail with the error given (18456 by default) until allowed again', async () => {
    server.refuseLogins(true);
    expect((await failure(connect())).message).toBe("Login failed for user 'app'.");
    server.refuseLogins(new SqlServerError(4060, 'Cannot open database "shop" requested by the login. The login failed.', 11, 1));
    expect((await failure(connect())).message).toBe('Cannot open database "shop" requested by the login. The login failed.');
    server.refuseLogins(false);
    await connect();
  });

  it('tells the backend when a session closes', async () => {
    const pool = await connect({ pool: { max: 1 } });
    const [session] = server.sessions();
    const closed = new Promise<number>((resolve) => server.once('sessionClosed', (s: { id: number }) => resolve(s.id)));
    await pool.close();
    expect(await closed).toBe(session!.id);
    expect(closedSessions).toContain(session!.id);
  });
});

describe('fairness between connections', () => {
  it('answers a short statement on another connection while three connections stream, after at most a few packets of theirs', async () => {
    // Rows of ~400 bytes in 32 KB packets: about 80 rows a packet.
    const options = { packetSize: 32768 };
    const streams = await connect({ pool: { max: 3, min: 3 }, options });
    const probe = await connect({ pool: { max: 1, min: 1 }, validateConnection: false, options } as Partial<mssql.config>);
    let pulled = 0;
    handler = async function* (sql) {
      if (sql === 'probe') return yield { columns: [{ name: 'pulled', type: { name: 'int' }, nullable: false }], rows: [[pulled]] };
      yield {
        columns: [...intColumn, { name: 'pad', type: { name: 'nvarchar', length: 200 } }],
        rows: (function* () {
          for (let i = 0; i < 40_000; i++) {
            pulled++;
            yield [i, PAD];
          }
        })(),
      };
    };
    await probe.request().query('probe');
    const results = [0, 1, 2].map(() => {
      const req = streams.request();
      req.stream = true;
      let rows = 0;
      req.on('row', () => rows++);
      const done = once(req, 'done').then(() => rows);
      void req.query('stream');
      return done;
    });
    while (pulled < 3000) await new Promise((r) => setImmediate(r));
    const sent = pulled;
    const { recordset } = await probe.request().query('probe');
    // Each stream builds a packet, then lets the server read what else came: the probe waits for
    // about one packet of each, not for the results (or the socket buffers) to fill.
    expect(recordset[0].pulled - sent).toBeLessThan(3 * 4 * 80);
    expect(await Promise.all(results)).toEqual([40_000, 40_000, 40_000]);
  });
});

describe('packets', () => {
  it('sends each packet of a result as it fills: the client sees the first rows while the backend still holds the rest', async () => {
    const pool = await connect();
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    handler = async function* () {
      yield {
        columns: [...intColumn, { name: 'pad', type: { name: 'nvarchar', length: 200 } }],
        rows: (async function* () {
          for (let i = 0; i < 50; i++) yield [i, PAD];
          await held;
          yield [50, PAD];
        })(),
      };
    };
    const req = pool.request();
    req.stream = true;
    const ids: number[] = [];
    req.on('row', (row: { n: number }) => {
      ids.push(row.n);
      if (row.n === 0) release();
    });
    const done = once(req, 'done');
    void req.query('held');
    await done;
    expect(ids).toEqual(Array.from({ length: 51 }, (_, i) => i));
  });

  it('negotiates the packet size the client asks for (LOGIN7) and streams a result with it', async () => {
    const pool = await connect({ options: { packetSize: 16384 } });
    const state = numbersBackend(5000);
    const r = await pool.request().query('numbers');
    expect(r.recordset).toHaveLength(5000);
    expect(state.pulled).toBe(5000);
    expect(server.sessions().map((x) => x.packetSize)).toEqual([16384]);
  });

  it('a backend failure that is not a SqlServerError reaches the client as error 50000 naming the cause', async () => {
    const pool = await connect();
    handler = async function* () {
      yield* [];
      throw new TypeError('model bug');
    };
    const err = (await failure(pool.request().query('anything'))) as Error & { number: number };
    expect(err.number).toBe(50000);
    expect(err.message).toBe('TDS test server backend failed: model bug');
  });
});

describe('stalls and freezes', () => {
  it('stallRequests(): a held request times out on the client, never reaches the backend, and the connection is reused', async () => {
    // Without mssql's SELECT 1 on each acquire, which would be held too.
    const pool = await connect({ pool: { max: 1 }, requestTimeout: 300, validateConnection: false } as Partial<mssql.config>);
    const seen: string[] = [];
    handler = async function* (sql) {
      seen.push(sql);
      yield okResult;
    };
    await pool.request().query('warm'); // the session exists, its setup batch done, before the stall
    server.stallRequests(true);
    const err = (await failure(pool.request().query('held'))) as Error & { code: string };
    server.stallRequests(false);
    expect(err.code).toBe('ETIMEOUT');
    expect(err.message).toBe('Timeout: Request failed to complete in 300ms');
    expect(seen).toEqual(['warm']);
    expect((await pool.request().query('after')).recordset).toEqual([{ ok: true }]);
    expect(seen).toEqual(['warm', 'after']);
    expect(server.sessions()).toHaveLength(1);
  });

  it('freeze(): mid-stream the server goes quiet with the socket open; the client gives up only through its own timers', async () => {
    const pool = await connect({ pool: { max: 1 }, options: { cancelTimeout: 300 } as mssql.config['options'] });
    numbersBackend();
    // Frozen after 300 rows: no more data, and the cancel sent when the client gives up is never answered.
    const err = await streamFailing(pool, 'numbers', 300, (req) => {
      server.freeze(true);
      setImmediate(() => req.cancel());
    });
    server.freeze(false);
    expect(err.code).toBe('ETIMEOUT');
    expect(err.message).toMatch(/cancel/i);
    expect((await pool.request().query('ok')).recordset).toEqual([{ ok: true }]);
  });
});

it('refuses to send a value longer than its column declares (SQL Server never does)', async () => {
  const pool = await connect();
  handler = async function* () {
    yield { columns: [{ name: 'lsn', type: { name: 'binary', length: 10 } }], rows: [[Buffer.alloc(11)]] };
  };
  const err = (await failure(pool.request().query('too long'))) as Error & { number: number };
  expect(err.number).toBe(50000);
  expect(err.message).toBe('TDS test server backend failed: column lsn: a value of length 11 does not fit binary(10)');
});

it('close(): the server goes away for good (its connections closed, new ones refused); one started on the same port serves again', async () => {
  const own = await startTdsServer({ backend });
  const port = own.port;
  const parsed = mssql.ConnectionPool.parseConnectionString(own.connectionString({ database: 'shop', user: 'app', password: PASSWORD }));
  const pool = new mssql.ConnectionPool({ ...parsed, connectionTimeout: 2000, pool: { max: 1 } });
  pool.on('error', () => undefined);
  pools.push(pool);
  await pool.connect();
  expect((await pool.request().query('select 1 as one')).recordset).toEqual([{ one: 1 }]);
  await own.close();
  const err = await failure(pool.request().query('select 1 as one'));
  expect(['ESOCKET', 'ECONNCLOSED', 'ECONNRESET']).toContain(err.code);
  expect(err.message).toMatch(/^Failed to connect to 127\.0\.0\.1:\d+/);

  const again = await startTdsServer({ backend, port });
  try {
    expect((await pool.request().query('select 1 as one')).recordset).toEqual([{ one: 1 }]);
  } finally {
    await pool.close();
    await again.close();
  }
});
