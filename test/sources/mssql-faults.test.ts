/**
 * Faults at the wire, under the real driver: a statement that stalls past the request timeout, a
 * server that accepts TCP but never answers PRELOGIN, a refused login, a server gone for good in the
 * middle of a run. Each ends in progress with every change exactly once, or in a clear error; none
 * hangs. (A connection reset mid-stream with a rewind to the last checkpoint is in
 * mssql-reader.test.ts, "reconnects with back-off after a dropped connection".)
 */
import type { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { Envelope } from '../../lib/envelope/types.js';
import { ErrorCodes } from '../../lib/errors.js';
import { mssqlCdc, type MssqlCdcOptions } from '../../lib/sources/mssql/reader.js';
import type { CdcModel } from '../support/cdc-model.js';
import { SQL_PASSWORD, sqlServerForTest, type TestSqlServer } from '../support/sql-server.js';
import { readUntil, watched } from '../support/streams.js';

const FAST: Partial<MssqlCdcOptions> = { pollIntervalMs: 2, maxPollIntervalMs: 5, retryDelayMs: 1, heartbeatMs: 60_000, tables: ['Persons'], start: 'earliest' };
const CHANGES = 'cdc.fn_cdc_get_all_changes_dbo_Persons';

function reader(connectionString: string, opts: Partial<MssqlCdcOptions>, logs: string[]): Readable {
  return mssqlCdc({ connectionString, tables: ['Persons'], ...FAST, log: (l) => logs.push(l), ...opts });
}

function persons(m: CdcModel, from: number, n: number): void {
  for (let i = from; i < from + n; i++) m.commit([{ table: 'Persons', op: 'insert', row: { Id: i, Name: `p${i}` } }]);
}

const ids = (seen: Envelope[]) => seen.filter((e) => e.type === 'cdc').map((e) => (e.data as { Id: number }).Id);
const upTo = (n: number) => (seen: Envelope[]) => ids(seen).length >= n && seen.at(-1)!.type === 'checkpoint';

async function server(): Promise<TestSqlServer> {
  return sqlServerForTest();
}

describe('faults at the wire, through the driver', () => {
  it('a change query that stalls before its first row past the request timeout is cancelled and read again: each change once', async () => {
    const db = await server();
    const m = db.model;
    persons(m, 1, 20);
    let stalls = 1;
    let released: () => void = () => undefined;
    m.beforeStatement = (name) => {
      if (name !== CHANGES || stalls-- <= 0) return undefined;
      // The server holds the statement until the test ends (or the client gives up on it).
      return new Promise<void>((resolve) => (released = resolve));
    };
    const logs: string[] = [];
    try {
      const seen = await readUntil<Envelope>(reader(db.connectionStringFor({}) + ';Request Timeout=500', { queryMode: 'function' }, logs), upTo(20), 20_000);
      expect(ids(seen)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      // No first row within the request timeout: read again, in a smaller window.
      expect(logs.join('\n')).toMatch(/dbo\.Persons: the first row of a window of up to 10000 rows did not come within the request timeout \(Timeout: Request failed to complete in 500ms\); reading windows of up to 2500 rows/);
      expect(m.calls.get('attention')).toBe(1);
    } finally {
      released();
    }
  });

  it('a server that accepts TCP but never answers PRELOGIN: the attempt times out, the next one gets through', async () => {
    const db = await server();
    persons(db.model, 1, 3);
    db.server.silent();
    const logs = watched((l) => /connecting \(attempt 1 of 3\) failed/.test(l) && db.server.silent(false));
    const seen = await readUntil<Envelope>(reader(`${db.connectionString};Connection Timeout=1`, { connectAttempts: 3 }, logs), upTo(3), 20_000);
    expect(ids(seen)).toEqual([1, 2, 3]);
    expect(logs.join('\n')).toMatch(/connecting \(attempt 1 of 3\) failed: could not connect to SQL Server at 127\.0\.0\.1:\d+\/shop: Failed to connect to 127\.0\.0\.1:\d+ in 1000ms/);
  });

  it('a server that never answers PRELOGIN at all: gives up after its attempts with a clear message', async () => {
    const db = await server();
    db.server.silent();
    const logs: string[] = [];
    const err = await readUntil(reader(`${db.connectionString};Connection Timeout=1`, { connectAttempts: 2 }, logs), () => false, 20_000).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCodes.SQL_CONNECT, message: expect.stringMatching(/could not connect to SQL Server at 127\.0\.0\.1:\d+\/shop: Failed to connect to .* in 1000ms.*gave up after 2 attempts/) });
  });

  it('a login the server refuses (18456) is reported at once, not retried, and never shows the password', async () => {
    const db = await server();
    db.server.refuseLogins();
    const logs: string[] = [];
    const err = await readUntil(reader(db.connectionString, { connectAttempts: 5 }, logs), () => false, 20_000).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCodes.SQL_CONNECT, message: expect.stringMatching(/SQL Server at 127\.0\.0\.1:\d+\/shop refused the login: Login failed for user 'dstream'\. \(check User Id and Password/) });
    expect(logs.filter((l) => /attempt/.test(l))).toEqual([]);
    expect(`${(err as Error).message}${logs.join('')}`).not.toContain(SQL_PASSWORD);
  });

  it('the server gone for good in the middle of a run: gives up after reconnect_attempts, naming where and why', async () => {
    const db = await server();
    persons(db.model, 1, 5);
    const logs: string[] = [];
    const stream = reader(db.connectionString, { reconnectAttempts: 3 }, logs);
    let downed = false;
    const err = await readUntil<Envelope>(
      stream,
      (seen) => {
        if (!downed && ids(seen).length >= 5 && seen.at(-1)!.type === 'checkpoint') {
          downed = true;
          void db.down();
        }
        return false;
      },
      20_000,
    ).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCodes.SQL_CONNECT });
    expect((err as Error).message).toMatch(/127\.0\.0\.1:\d+\/shop.*ECONNREFUSED.*gave up after 3 attempts/s);
  });
});
