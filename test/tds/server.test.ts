/**
 * The TDS test server through the real `mssql`/tedious client: login, batches, sp_executesql with
 * typed parameters, result types, streaming under backpressure, errors, cancel and wire faults.
 * The backend here is a few lines of test code, so what is asserted is what tedious decoded
 * from the bytes the server wrote.
 */
import mssql from 'mssql';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTdsServer, type TdsServer } from '../support/tds/server.js';
import { SqlServerError, type BatchOutput, type ExecuteContext, type Param, type TdsBackend } from '../support/tds/types.js';

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
