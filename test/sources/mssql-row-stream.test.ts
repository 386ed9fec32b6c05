/**
 * streamRows() (lib/sources/mssql/row-stream.ts): a statement's rows read straight from tedious
 * on a connection the `mssql` pool lends, against the TDS test server. The pool is the driver's;
 * these tests watch what it lends and gets back, and compare every value with what the driver's
 * own Request gives for the same statement.
 */
import type { Readable } from 'node:stream';
import mssql from 'mssql';
import { describe, expect, it } from 'vitest';
import { lsnFromHex } from '../../lib/sources/mssql/lsn.js';
import type { CaptureInstance, CdcQueries, ChangeRow } from '../../lib/sources/mssql/queries.js';
import { loadTedious, streamRows, type TdsParam } from '../../lib/sources/mssql/row-stream.js';
import { changeLayout, SQL } from '../../lib/sources/mssql/sql.js';
import { sqlServerConnector } from '../../lib/sources/mssql/sqlserver.js';
import { CdcModel, shopModel } from '../support/cdc-model.js';
import { sqlServerForTest, type TestSqlServer } from '../support/sql-server.js';
import { collect, readUntil, tick, until } from '../support/streams.js';

const tds = loadTedious();

type Lending = {
  acquire(requester: object, callback: (err: Error | null, connection?: object, config?: unknown) => void): unknown;
  release(connection: object): unknown;
};

/**
 * A pool set up as the connector sets up its own, which counts, per connection, what it lends and
 * what comes back: `outstanding` is what is lent now, `unmatched` every release of a connection
 * that was not lent at the time (a second release of one).
 */
async function countingPool(db: TestSqlServer, max: number, requestTimeout = 10_000) {
  const config = mssql.ConnectionPool.parseConnectionString(db.connectionString);
  const pool = new mssql.ConnectionPool({ ...config, requestTimeout, pool: { min: 0, max }, validateConnection: 'socket', options: { ...config.options, useUTC: true } } as mssql.config);
  pool.on('error', () => undefined);
  await pool.connect();
  const lent = new Map<object, number>();
  let unmatched = 0;
  const p = pool as unknown as Lending;
  const acquire = p.acquire.bind(pool);
  const release = p.release.bind(pool);
  p.acquire = (requester, callback) =>
    acquire(requester, (err, connection, cfg) => {
      if (connection !== undefined) lent.set(connection, (lent.get(connection) ?? 0) + 1);
      callback(err, connection, cfg);
    });
  p.release = (connection) => {
    const n = lent.get(connection) ?? 0;
    if (n !== 1) unmatched++;
    lent.set(connection, n - 1);
    return release(connection);
  };
  return {
    pool,
    outstanding: () => [...lent.values()].reduce((a, b) => a + b, 0),
    unmatched: () => unmatched,
  };
}

function workload(m: CdcModel, n: number, width = 0): void {
  const pad = 'x'.repeat(width);
  for (let i = 1; i <= n; i++) m.commit([{ table: 'Persons', op: 'insert', row: { Id: i, Name: `p${i}${pad}`, Email: `p${i}@example.com` } }]);
}

/** A change read as changes() sends it: query mode direct (`text`) and function (`fn`). */
function changeRead(db: TestSqlServer, name = 'dbo_Persons'): { text: string; fn: string; params: Record<string, TdsParam> } {
  const instance = db.model.instance(name)!;
  return {
    text: SQL.changeTable(instance.name, instance.columns, false),
    fn: SQL.changes(instance.name, instance.columns, false),
    params: { from: [tds.TYPES.VarBinary, instance.startLsn, 10], to: [tds.TYPES.VarBinary, lsnFromHex(db.model.currentMaxLsn!), 10] },
  };
}

const ended = (s: Readable) =>
  new Promise<{ end: boolean; error?: Error & { code?: string; number?: number } }>((resolve) => {
    let end = false;
    s.on('end', () => (end = true));
    s.on('error', (error) => resolve({ end, error }));
    s.on('close', () => resolve({ end }));
  });

describe('streamRows: the connection goes back to the pool exactly once', () => {
  for (const max of [1, 2]) {
    it(`on every path (end, SQL error, cancel while reading and while paused, destroy before a connection or a row, timeout, reset), many times over a pool of ${max}`, async () => {
      const db = await sqlServerForTest();
      workload(db.model, 3000);
      // More bytes than the socket buffers hold, so the server is still sending when the client cancels.
      const wide = 'x'.repeat(2000);
      for (let i = 1; i <= 4000; i++) db.model.commit([{ table: 'Customers', op: 'insert', row: { CustomerId: i, Company: wide } }]);
      const { pool, outstanding, unmatched } = await countingPool(db, max, 400);
      const read = changeRead(db);
      const wideRead = changeRead(db, 'dbo_Customers');
      const open = (text = read.text, params = read.params) => streamRows(pool, tds, mssql, text, params, { arrays: true, high: 64, low: 16 });
      const settle = async () => {
        await until(() => outstanding() === 0, 5000);
        // The pool's own statement on whatever it lends next: nothing left over on the connection.
        expect((await pool.request().query('SELECT 1 AS ok')).recordset).toEqual([{ ok: 1 }]);
      };
      try {
        for (let round = 0; round < 4; round++) {
          // To its end.
          expect(await collect(open())).toHaveLength(3000);
          await settle();

          // A SQL Server error (313: the change function below the instance's start), with its number.
          const bad = await ended(open(read.fn, { ...read.params, from: [tds.TYPES.VarBinary, lsnFromHex('0x00000000000000000000'), 10] }));
          expect(bad.error).toMatchObject({ name: 'RequestError', number: 313, code: 'EREQUEST' });
          await settle();

          // Destroyed after some rows were read: cancelled (ATTENTION).
          const attention = db.model.calls.get('attention') ?? 0;
          const mid = open(wideRead.text, wideRead.params);
          await readUntil(mid, (s) => s.length >= 10);
          expect(mid.destroyed).toBe(true);
          await until(() => (db.model.calls.get('attention') ?? 0) === attention + 1);
          await settle();

          // Destroyed unread with its request paused (the buffer at its high mark): cancelled too.
          const full = open(wideRead.text, wideRead.params);
          full.once('readable', () => undefined);
          await until(() => full.readableLength >= 64);
          full.destroy();
          await until(() => (db.model.calls.get('attention') ?? 0) === attention + 2);
          await settle();

          // Destroyed at once: before the pool lends it a connection.
          const early = open();
          early.destroy();
          await settle();

          // Destroyed while its request is held on the server, before the first row.
          db.server.stallRequests(true);
          const held = open();
          await tick(50);
          held.destroy();
          db.server.stallRequests(false);
          await settle();

          // Held past the request timeout: ETIMEOUT (the reader's FirstRowTimeout).
          db.server.stallRequests(true);
          const late = await ended(open());
          db.server.stallRequests(false);
          expect(late.error).toMatchObject({ code: 'ETIMEOUT' });
          await settle();

          // The connection reset in the middle: an error, not an end; the pool replaces the connection.
          const reset = open(wideRead.text, wideRead.params);
          reset.once('readable', () => undefined);
          await until(() => reset.readableLength >= 16);
          const result = ended(reset);
          db.server.dropConnections();
          // A paused request reads nothing from its socket: the reset shows once rows are read again.
          reset.resume();
          const r = await result;
          expect(r.end).toBe(false);
          expect(['ECONNRESET', 'ESOCKET', 'ECLOSE']).toContain(r.error?.code);
          await settle();
        }
        expect(unmatched()).toBe(0);
        expect(pool.borrowed).toBe(0);
      } finally {
        await pool.close();
      }
    });
  }

  /** A change read of 5000 rows with marks 100/20 on a pool of one; the pool lends nothing once it is done. */
  async function paced(test: (s: Readable) => Promise<void>): Promise<void> {
    const db = await sqlServerForTest();
    workload(db.model, 5000);
    const { pool, outstanding } = await countingPool(db, 1);
    const read = changeRead(db);
    try {
      await test(streamRows(pool, tds, mssql, read.text, read.params, { arrays: true, high: 100, low: 20 }));
      await until(() => outstanding() === 0);
    } finally {
      await pool.close();
    }
  }

  it('holds at most `high` rows while nobody reads, and resumes below `low`', () =>
    paced(async (s) => {
      s.once('readable', () => undefined);
      await until(() => s.readableLength >= 100);
      await tick(100);
      // Paused at the high mark: the server's further rows wait on the socket.
      expect(s.readableLength).toBe(100);
      for (let i = 0; i < 80; i++) s.read();
      await tick(50);
      expect(s.readableLength).toBe(20);
      s.read();
      await until(() => s.readableLength >= 100);
      expect(await collect(s)).toHaveLength(5000 - 81);
    }));

  it('holds its request at the first row until a consumer listens (a read opened ahead of its window), then reads on', () =>
    paced(async (s) => {
      // An 'error' listener is not a consumer (windows.ts keeps one on a read opened ahead).
      s.on('error', () => undefined);
      await until(() => s.readableLength >= 1);
      await tick(100);
      // The stream has asked for more by itself meanwhile (_read); the request stays held.
      expect(s.readableLength).toBe(1);
      s.once('readable', () => undefined);
      await until(() => s.readableLength >= 100);
      expect(await collect(s)).toHaveLength(5000);
    }));

  it('a consumer that only calls read() (no listener) gets every row', () =>
    paced(async (s) => {
      await until(() => s.readableLength >= 1);
      await tick(50);
      let rows = 0;
      while (!s.readableEnded) {
        if (s.read() !== null) rows++;
        else await tick(1);
      }
      expect(rows).toBe(5000);
    }));

  it('a pool that is closed: the stream fails with the driver\'s ECONNCLOSED and lends nothing', async () => {
    const db = await sqlServerForTest();
    workload(db.model, 1);
    const { pool, outstanding } = await countingPool(db, 1);
    await pool.close();
    const read = changeRead(db);
    const r = await ended(streamRows(pool, tds, mssql, read.text, read.params, { arrays: true, high: 8, low: 2 }));
    expect(r.error).toMatchObject({ code: 'ECONNCLOSED' });
    expect(outstanding()).toBe(0);
  });
});

describe('changes() through a connector pool of one or two connections', () => {
  for (const options of [{ single: true }, { maxConnections: 2 }]) {
    it(`survives many ended, cancelled and failed change reads (${JSON.stringify(options)})`, async () => {
      const db = await sqlServerForTest();
      workload(db.model, 2000, 100);
      const q: CdcQueries = await sqlServerConnector(db.connectionString)({ ...options, requestTimeoutMs: 5000 });
      try {
        const persons = (await q.captureInstances()).find((i) => i.name === 'dbo_Persons')!;
        const max = (await q.maxLsn())!;
        for (let i = 0; i < 10; i++) {
          const mode = i % 2 === 0 ? 'direct' : 'function';
          expect(await collect(q.changes(persons, persons.startLsn!, max, { updateOld: false, mode }))).toHaveLength(2000);
          const cut = q.changes(persons, persons.startLsn!, max, { updateOld: false, mode });
          expect(await readUntil(cut, (s) => s.length >= 5)).toHaveLength(5);
          q.changes(persons, persons.startLsn!, max, { updateOld: false, mode }).destroy();
          const failed = await ended(q.changes(persons, lsnFromHex('0x00000000000000000000'), max, { updateOld: false, mode: 'function' }));
          expect(failed.error).toMatchObject({ number: 313 });
          // With one connection, one not given back would hold this statement until the pool's acquire timeout.
          expect(await q.databaseInfo()).toEqual({ database: 'shop', cdcEnabled: true });
        }
        await until(() => db.model.openStreams === 0);
      } finally {
        await q.close();
      }
    });
  }
});

describe('values: as the driver\'s own Request gives them', () => {
  it('every type a change read selects, and NULLs, in both query modes', async () => {
    const m = shopModel();
    const columns = [
      { name: 'Id', type: 'int' },
      { name: 'Tiny', type: 'tinyint' },
      { name: 'Small', type: 'smallint' },
      { name: 'Big', type: 'bigint' },
      { name: 'Flag', type: 'bit' },
      { name: 'Amount', type: 'decimal', sqlType: { name: 'decimal' as const, precision: 18, scale: 4 } },
      { name: 'Price', type: 'money' },
      { name: 'Ratio', type: 'float' },
      { name: 'Approx', type: 'real' },
      { name: 'Label', type: 'nvarchar', sqlType: { name: 'nvarchar' as const, length: 50 } },
      { name: 'Code', type: 'varchar', sqlType: { name: 'varchar' as const, length: 20 } },
      { name: 'Fixed', type: 'nchar', sqlType: { name: 'nchar' as const, length: 4 } },
      { name: 'Blob', type: 'varbinary', sqlType: { name: 'varbinary' as const, length: 16 } },
      { name: 'Doc', type: 'nvarchar', sqlType: { name: 'nvarchar' as const, length: 'max' as const } },
      { name: 'Guid', type: 'uniqueidentifier' },
      { name: 'Day', type: 'date' },
      { name: 'At', type: 'datetime2' },
      { name: 'Old', type: 'datetime' },
      { name: 'Zoned', type: 'datetimeoffset' },
      { name: 'Clock', type: 'time' },
    ];
    m.createTable('dbo.Kinds', columns, ['Id']);
    m.enableTable('dbo.Kinds');
    m.commit([
      {
        table: 'Kinds',
        op: 'insert',
        row: {
          Id: 1, Tiny: 255, Small: -32768, Big: '9007199254740993', Flag: true, Amount: '-12345.6789', Price: '922337203685477.5807', Ratio: 0.1 + 0.2, Approx: 1.5,
          Label: 'ünïcødé ☃', Code: 'ascii', Fixed: 'ab', Blob: Buffer.from([0, 1, 254, 255]), Doc: 'd'.repeat(9000), Guid: '6F9619FF-8B86-D011-B42D-00C04FC964FF',
          Day: new Date('2024-02-29T00:00:00Z'), At: new Date('2024-02-29T12:34:56.789Z'), Old: new Date('1999-12-31T23:59:59.997Z'), Zoned: new Date('2030-06-01T01:02:03.456Z'),
          Clock: new Date('1970-01-01T12:34:56.789Z'),
        },
      },
    ]);
    m.commit([{ table: 'Kinds', op: 'insert', row: { Id: 2 } }]);
    m.commit([{ table: 'Kinds', op: 'update', row: { Id: 2, Flag: false, Label: '' } }]);
    m.commit([{ table: 'Kinds', op: 'delete', row: { Id: 1 } }]);
    const db = await sqlServerForTest(m);
    const q = await sqlServerConnector(db.connectionString)();
    const config = mssql.ConnectionPool.parseConnectionString(db.connectionString);
    const pool = new mssql.ConnectionPool({ ...config, options: { ...config.options, useUTC: true } });
    await pool.connect();
    try {
      const kinds = (await q.captureInstances()).find((i) => i.name === 'dbo_Kinds') as CaptureInstance;
      const max = (await q.maxLsn())!;
      for (const mode of ['direct', 'function'] as const) {
        const ours = await collect<ChangeRow>(q.changes(kinds, kinds.startLsn!, max, { updateOld: true, mode }));
        // The same statement through the driver's Request, rows as arrays.
        const req = pool.request();
        req.input('from', mssql.VarBinary(10), kinds.startLsn!);
        req.input('to', mssql.VarBinary(10), max);
        req.arrayRowMode = true;
        const text = mode === 'direct' ? SQL.changeTable('dbo_Kinds', kinds.columns, true) : SQL.changes('dbo_Kinds', kinds.columns, true);
        const theirs = (await req.query(text)).recordset as unknown as unknown[][];
        expect(ours).toHaveLength(5);
        expect(ours).toEqual(theirs);
        // Same JavaScript types too (toEqual would let a Buffer-like or a boxed value pass).
        expect(ours.map((r) => r.map((v) => Object.prototype.toString.call(v)))).toEqual(theirs.map((r) => r.map((v) => Object.prototype.toString.call(v))));
        const layout = changeLayout(kinds.columns, mode === 'direct');
        const first = ours[0]!;
        const at = (name: string) => first[layout.first + kinds.columns.findIndex((c) => c.name === name)];
        expect(Buffer.isBuffer(first[0]) && (first[0] as Buffer).length).toBe(10);
        expect(typeof first[layout.commitTime]).toBe('string');
        expect([at('Big'), at('Flag'), at('Tiny'), at('Ratio'), at('Guid')]).toEqual(['9007199254740993', true, 255, 0.1 + 0.2, '6F9619FF-8B86-D011-B42D-00C04FC964FF']);
        expect(at('Blob')).toEqual(Buffer.from([0, 1, 254, 255]));
        // time as SQL Server writes it: hh:mm:ss and its scale's fraction (CONVERT(nvarchar(16), ...)).
        expect(at('Clock')).toBe('12:34:56.7890000');
        expect((at('Doc') as string).length).toBe(9000);
        // The row inserted with nothing but its key: every other column NULL.
        const bare = ours[1]!;
        expect(kinds.columns.filter((c) => c.name !== 'Id').map((c) => bare[layout.first + kinds.columns.indexOf(c)])).toEqual(kinds.columns.slice(1).map(() => null));
      }
    } finally {
      await pool.close();
      await q.close();
    }
  });
});
