/**
 * SqlServerQueries (lib/sources/mssql/sqlserver.ts), dstream's adapter over the `mssql` driver,
 * against the TDS test server: every statement it sends is parsed and answered by the CDC model's
 * T-SQL front, and tedious decodes what comes back. The raw-driver cases check the server refuses
 * what SQL Server refuses, with SQL Server's error numbers.
 */
import type { Readable } from 'node:stream';
import mssql from 'mssql';
import { describe, expect, it } from 'vitest';
import { lsnFromHex, lsnToHex } from '../../lib/sources/mssql/lsn.js';
import type { CdcQueries, ChangeRow } from '../../lib/sources/mssql/queries.js';
import { changeLayout } from '../../lib/sources/mssql/sql.js';
import { sqlServerConnector } from '../../lib/sources/mssql/sqlserver.js';
import { shopModel, type CdcModel } from '../support/cdc-model.js';
import { sqlServerForTest, type TestSqlServer } from '../support/sql-server.js';
import { collect, readUntil, until } from '../support/streams.js';

async function connected(m: CdcModel = shopModel(), options: { single?: boolean } = {}): Promise<{ db: TestSqlServer; q: CdcQueries }> {
  const db = await sqlServerForTest(m);
  const q = await sqlServerConnector(db.connectionString)(options);
  return { db, q };
}

const CHECKPOINTS = { schema: 'dstream', table: 'checkpoints' };

function workload(m: CdcModel, n: number): void {
  for (let i = 1; i <= n; i++) m.commit([{ table: 'Persons', op: 'insert', row: { Id: i, Name: `p${i}`, Email: `p${i}@example.com` } }]);
}

describe('SqlServerQueries through the driver', () => {
  it('changes() streams the rows of a window (the request is sent)', async () => {
    const { db, q } = await connected();
    workload(db.model, 3);
    db.model.commit([{ table: 'Persons', op: 'update', row: { Id: 2, Name: 'two' } }]);
    try {
      const [persons] = (await q.captureInstances()).filter((i) => i.name === 'dbo_Persons');
      // Rows are arrays of the select list's values, laid out as changeLayout says.
      const fn = changeLayout(persons!.columns, false);
      const id = fn.first + persons!.columns.findIndex((c) => c.name === 'Id');
      const name = fn.first + persons!.columns.findIndex((c) => c.name === 'Name');
      const rows = await readUntil<ChangeRow>(q.changes(persons!, persons!.startLsn!, (await q.maxLsn())!, { updateOld: true, mode: 'function' }), (s) => s.length >= 5, 3000);
      expect(rows.map((r) => [r[2], r[id], r[name]])).toEqual([
        [2, 1, 'p1'],
        [2, 2, 'p2'],
        [2, 3, 'p3'],
        [3, 2, 'p2'],
        [4, 2, 'two'],
      ]);
      expect(lsnToHex(rows[0]![0] as Buffer)).toMatch(/^0x[0-9A-F]{20}$/);
      // Each row carries its commit's time (cdc.lsn_time_mapping), as sys.fn_cdc_map_lsn_to_time gives it, in both query modes.
      const times = await Promise.all(rows.map((r) => q.lsnTime(r[0] as Buffer)));
      expect(times.every((t) => typeof t === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/.test(t))).toBe(true);
      expect(rows.map((r) => r[fn.commitTime])).toEqual(times);
      const ct = changeLayout(persons!.columns, true);
      expect(ct).toEqual({ ...fn, commandId: 3, commitTime: fn.commitTime + 1, first: fn.first + 1 });
      const direct = await readUntil<ChangeRow>(q.changes(persons!, persons!.startLsn!, (await q.maxLsn())!, { updateOld: true, mode: 'direct' }), (s) => s.length >= 5, 3000);
      expect(direct.map((r) => [r[2], r[id + 1], r[ct.commitTime]])).toEqual(rows.map((r) => [r[2], r[id], r[fn.commitTime]]));
      // In the change table's order, __$command_id counts the operations of a commit.
      expect(direct.every((r) => typeof r[ct.commandId] === 'number')).toBe(true);
    } finally {
      await q.close();
    }
  });

  it('snapshot() streams the current rows in primary-key order', async () => {
    const { db, q } = await connected();
    workload(db.model, 3);
    db.model.commit([{ table: 'Persons', op: 'delete', row: { Id: 2 } }]);
    try {
      const rows = await readUntil<Record<string, unknown>>(q.snapshot({ schema: 'dbo', table: 'Persons' }, [{ name: 'Id', type: 'int' }, { name: 'Name', type: 'nvarchar' }], ['Id']), (s) => s.length >= 2, 3000);
      expect(rows).toEqual([
        { Id: 1, Name: 'p1' },
        { Id: 3, Name: 'p3' },
      ]);
    } finally {
      await q.close();
    }
  });

  it('snapshot() in chunks: the first rows up to the limit, then the rows after a key', async () => {
    const { db, q } = await connected();
    workload(db.model, 5);
    const columns = [{ name: 'Id', type: 'int' }];
    const persons = { schema: 'dbo', table: 'Persons' };
    try {
      const ids = async (s: Readable) => (await collect<Record<string, unknown>>(s)).map((r) => r.Id);
      expect(await ids(q.snapshot(persons, columns, ['Id'], { limit: 2 }))).toEqual([1, 2]);
      expect(await ids(q.snapshot(persons, columns, ['Id'], { limit: 2, after: [2] }))).toEqual([3, 4]);
      expect(await ids(q.snapshot(persons, columns, ['Id'], { limit: 2, after: [4] }))).toEqual([5]);
      expect(await ids(q.snapshot(persons, columns, ['Id'], { limit: 2, after: [5] }))).toEqual([]);
    } finally {
      await q.close();
    }
  });

  it('createCheckpointTable() creates the schema and the table, and again is a no-op', async () => {
    const { db, q } = await connected();
    try {
      expect(await q.checkpointTableExists(CHECKPOINTS)).toBe(false);
      await q.createCheckpointTable(CHECKPOINTS);
      await q.createCheckpointTable(CHECKPOINTS);
      expect(await q.checkpointTableExists(CHECKPOINTS)).toBe(true);
      expect(db.model.schemas.has('dstream')).toBe(true);
      await q.saveCheckpoints(CHECKPOINTS, 'shop', 'mssql-cdc', [{ table: 'dbo.Persons', lsn: '0x00000000002A00000020', position: null }]);
      // A table's LSN never moves back.
      await q.saveCheckpoints(CHECKPOINTS, 'shop', 'mssql-cdc', [{ table: 'dbo.Persons', lsn: '0x00000000002A00000010', position: null }, { table: '*', lsn: null, position: '{"a":1}' }]);
      const rows = await q.loadCheckpoints(CHECKPOINTS, 'shop');
      expect(rows.map((r) => [r.table, r.lsn && lsnToHex(r.lsn), r.position, r.source])).toEqual([
        ['*', null, '{"a":1}', 'mssql-cdc'],
        ['dbo.Persons', '0x00000000002A00000020', null, 'mssql-cdc'],
      ]);
      expect(rows[0]!.savedAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/);
      expect(await q.checkpointRowCount(CHECKPOINTS)).toBe(2);
      expect(await q.deleteCheckpoints(CHECKPOINTS, 'shop')).toBe(2);
      await q.dropCheckpointTable(CHECKPOINTS);
      expect(await q.checkpointTableExists(CHECKPOINTS)).toBe(false);
    } finally {
      await q.close();
    }
  });

  it('answers every other statement: database, agent, tables, instances, columns, LSN functions, marks, locks', async () => {
    const { db, q } = await connected();
    const m = db.model;
    workload(m, 2);
    const tick = m.tick();
    try {
      expect(await q.databaseInfo()).toEqual({ database: 'shop', cdcEnabled: true });
      expect(await q.agentState()).toBe('running');
      m.agent = 'unknown';
      expect(await q.agentState()).toBe('unknown');
      expect(await q.sourceTables()).toEqual([
        { schema: 'dbo', table: 'Persons', tracked: true },
        { schema: 'sales', table: 'Orders', tracked: true },
        { schema: 'dbo', table: 'Customers', tracked: true },
      ]);
      const instances = await q.captureInstances();
      expect(instances.map((i) => [i.name, i.schema, i.table, i.columns.map((c) => `${c.name}:${c.type}`).join(',')])).toEqual([
        ['dbo_Customers', 'dbo', 'Customers', 'CustomerId:int,Company:nvarchar'],
        ['dbo_Persons', 'dbo', 'Persons', 'Id:int,Name:nvarchar,Email:nvarchar'],
        ['sales_Orders', 'sales', 'Orders', 'OrderId:bigint,CustomerId:int,Total:decimal'],
      ]);
      expect(instances[0]!.createDate).toMatch(/^2026-01-01T12:00:00/);
      expect(await q.tableColumns()).toContainEqual({
        schema: 'sales',
        table: 'Orders',
        columns: [
          { name: 'OrderId', type: 'bigint', nullable: false },
          { name: 'CustomerId', type: 'int', nullable: true },
          { name: 'Total', type: 'decimal', nullable: true },
        ],
        primaryKey: ['OrderId'],
      });
      const max = (await q.maxLsn())!;
      expect(lsnToHex(max)).toBe(tick);
      const min = await q.minLsn('dbo_Persons');
      expect(lsnToHex(min)).toBe('0x00000000002A00000001');
      expect(lsnToHex(await q.minLsn('no_such_instance'))).toBe('0x00000000000000000000');
      // Several instances in one statement, in the order asked.
      expect((await q.minLsns(['no_such_instance', 'dbo_Persons'])).map(lsnToHex)).toEqual(['0x00000000000000000000', '0x00000000002A00000001']);
      expect(await q.minLsns([])).toEqual([]);
      expect(await q.lsnTime(max)).toBe('2026-01-01T12:00:03');
      expect(await q.lsnTime(min)).toBeNull();
      expect(await q.windowCommits(min, max, 2)).toEqual({ commits: 2, last: Buffer.from('00000000002A00000020', 'hex') });
      expect(await q.windowCommits(min, max, 10)).toEqual({ commits: 3, last: max });
      // The quiet-period entry (tran_id 0x00) is not a transaction.
      expect(await q.countTransactions(min, max)).toBe(2);
      const persons = { instance: 'dbo_Persons', from: min, to: max };
      const customers = { instance: 'dbo_Customers', from: min, to: max };
      expect(await q.windowRows([persons], 10)).toEqual([{ rows: 2, last: Buffer.from('00000000002A00000020', 'hex') }]);
      expect(await q.windowRows([persons], 1)).toEqual([{ rows: 1, last: Buffer.from('00000000002A00000010', 'hex') }]);
      expect(await q.windowRows([customers], 10)).toEqual([{ rows: 0, last: null }]);
      // A window's tables in one statement, each range its own, the answers in the order asked.
      const requests = m.calls.get('request') ?? 0;
      expect(await q.windowRows([customers, persons, { ...persons, from: Buffer.from('00000000002A00000020', 'hex') }], 10)).toEqual([
        { rows: 0, last: null },
        { rows: 2, last: Buffer.from('00000000002A00000020', 'hex') },
        { rows: 1, last: Buffer.from('00000000002A00000020', 'hex') },
      ]);
      expect(m.calls.get('request')).toBe(requests + 1);
      expect(await q.windowRows([], 10)).toEqual([]);
      // The capture instances and their columns, asked every window: one request too.
      const asked = m.calls.get('request')!;
      expect((await q.captureInstances()).map((i) => [i.name, i.columns.length])).toEqual([
        ['dbo_Customers', 2],
        ['dbo_Persons', 3],
        ['sales_Orders', 3],
      ]);
      expect(m.calls.get('request')).toBe(asked + 1);
      // And with the max LSN, what every window starts with: one request.
      const start = await q.windowStart();
      expect(m.calls.get('request')).toBe(asked + 2);
      expect(start).toEqual({ instances: await q.captureInstances(), max: await q.maxLsn() });
      expect(start.max).toEqual(Buffer.from(m.currentMaxLsn!.slice(2), 'hex'));

      m.createTable('dbo.Audit', [{ name: 'Id', type: 'int', nullable: false }], ['Id']);
      await q.enableDatabase('shop');
      await q.enableTable({ schema: 'dbo', table: 'Audit' }, 'shop');
      expect(m.instance('dbo_Audit')).toBeDefined();
      const marks = await q.marks();
      expect(marks.database).toBe('shop');
      expect([...marks.tables]).toEqual([['dbo.Audit', 'shop']]);
      await q.disableTable({ schema: 'dbo', table: 'Audit' });
      expect(m.instance('dbo_Audit')).toBeUndefined();
      expect([...(await q.marks()).tables]).toEqual([]);
      await q.disableDatabase();
      expect(m.cdcEnabled).toBe(false);
      expect((await q.marks()).database).toBeNull();
    } finally {
      await q.close();
    }
  });

  it('session-owned application locks: one holder, released when its connection closes', async () => {
    const { db } = await connected();
    const a = await sqlServerConnector(db.connectionString)({ single: true });
    const b = await sqlServerConnector(db.connectionString)({ single: true });
    try {
      expect(await a.tryLock('dstream/shop/dbo.Persons')).toBe(true);
      expect(await a.tryLock('dstream/shop/dbo.Persons')).toBe(true);
      expect(await a.holdsLock('dstream/shop/dbo.Persons')).toBe(true);
      expect(await b.tryLock('dstream/shop/dbo.Persons')).toBe(false);
      expect(await b.holdsLock('dstream/shop/dbo.Persons')).toBe(false);
      await a.close();
      await until(() => db.model.locks.size === 0);
      expect(await b.tryLock('dstream/shop/dbo.Persons')).toBe(true);
    } finally {
      await b.close();
    }
  });

  it('destroy() of a change stream cancels the request (ATTENTION) and the connection serves the next statement', async () => {
    const { db, q } = await connected(shopModel(), { single: true });
    // More bytes than the socket buffers hold, so the server is still sending when the client cancels.
    const wide = 'x'.repeat(2000);
    for (let i = 1; i <= 4000; i++) db.model.commit([{ table: 'Persons', op: 'insert', row: { Id: i, Name: wide } }]);
    try {
      const [persons] = (await q.captureInstances()).filter((i) => i.name === 'dbo_Persons');
      const stream: Readable = q.changes(persons!, persons!.startLsn!, (await q.maxLsn())!, { updateOld: false, mode: 'function' });
      const first = await readUntil(stream, (s) => s.length >= 10, 3000);
      expect(first).toHaveLength(10);
      expect(stream.destroyed).toBe(true);
      await until(() => (db.model.calls.get('attention') ?? 0) === 1);
      // The one connection of the pool is free again and answers at once.
      expect(await q.databaseInfo()).toEqual({ database: 'shop', cdcEnabled: true });
      expect(db.model.openStreams).toBe(0);
    } finally {
      await q.close();
    }
  });
});

/** A pool of the raw driver, for statements dstream does not send. */
async function pool(db: TestSqlServer): Promise<mssql.ConnectionPool> {
  const config = mssql.ConnectionPool.parseConnectionString(db.connectionString);
  const p = new mssql.ConnectionPool({ ...config, options: { ...config.options, useUTC: true } });
  await p.connect();
  return p;
}

describe('the test server refuses what SQL Server refuses', () => {
  const failure = (p: Promise<unknown>) => p.then(() => ({ number: 0, message: 'no error' }), (e: { number: number; message: string }) => ({ number: e.number, message: e.message }));

  it('answers invalid statements with their error numbers', async () => {
    const db = await sqlServerForTest();
    const p = await pool(db);
    try {
      const q = (sql: string, params: Record<string, [mssql.ISqlType | (() => mssql.ISqlType), unknown]> = {}) => {
        const r = p.request();
        for (const [k, [t, v]] of Object.entries(params)) r.input(k, t, v);
        return failure(r.query(sql));
      };
      // A function call inside EXEC (...): only literals and variables may be joined there.
      expect(await q("IF SCHEMA_ID(@schema) IS NULL EXEC (N'CREATE SCHEMA ' + QUOTENAME(@schema))", { schema: [mssql.NVarChar(128), 'dstream'] })).toEqual({ number: 102, message: "Incorrect syntax near 'QUOTENAME'." });
      expect(await q('SELECT FROM sys.tables')).toMatchObject({ number: 156, message: "Incorrect syntax near the keyword 'FROM'." });
      expect(await q('SELECT name FROM sys.tabels')).toMatchObject({ number: 208, message: "Invalid object name 'sys.tabels'." });
      expect(await q('SELECT nmae FROM sys.tables')).toMatchObject({ number: 207, message: "Invalid column name 'nmae'." });
      expect(await q('SELEC 1')).toMatchObject({ number: 2812 });
      expect(await q('EXEC sys.sp_cdc_enable_tabel @source_schema = N\'dbo\'')).toMatchObject({ number: 2812 });
      expect(await q('EXEC sys.sp_cdc_enable_table @source_schema = N\'dbo\', @source_name = N\'Persons\'')).toMatchObject({ number: 201, message: expect.stringContaining("'@role_name'") });
      expect(await q('SELECT fn_cdc_get_max_lsn() AS lsn')).toMatchObject({ number: 195 });
      expect(await q('SELECT @undeclared AS x')).toMatchObject({ number: 137 });
      expect(await q("MERGE dbo.Persons AS t USING (SELECT 1 AS Id) AS s ON t.Id = s.Id WHEN MATCHED THEN UPDATE SET Name = N'x'")).toMatchObject({ number: 10713 });
      // The change function checks its range when it runs: below the instance's start is error 313.
      const lsn = (hex: string) => [mssql.VarBinary(10), lsnFromHex(hex)] as [mssql.ISqlType, Buffer];
      db.model.commit([{ table: 'Persons', op: 'insert', row: { Id: 1 } }]);
      expect(await q("SELECT * FROM cdc.fn_cdc_get_all_changes_dbo_Persons(@from, @to, N'all')", { from: lsn('0x00000000000000000000'), to: lsn(db.model.currentMaxLsn!) })).toMatchObject({ number: 313 });
      expect(await q("SELECT * FROM cdc.fn_cdc_get_all_changes_dbo_Persons(@from, @to, N'everything')", { from: lsn('0x00000000002A00000001'), to: lsn(db.model.currentMaxLsn!) })).toMatchObject({ number: 313 });
    } finally {
      await p.close();
    }
  });
});

describe('the test server reads what a statement names', () => {
  it('reads a change table by every column a statement names (select list, WHERE, aggregates, a correlated commit time)', async () => {
    const db = await sqlServerForTest();
    const p = await pool(db);
    try {
      workload(db.model, 3);
      db.model.commit([{ table: 'Persons', op: 'update', row: { Id: 2, Name: 'two' } }]);
      // Name only in WHERE, __$start_lsn only in ORDER BY: both still read.
      const named = await p.request().query("SELECT __$operation AS op FROM cdc.dbo_Persons_CT WHERE Name = N'p2' ORDER BY __$start_lsn");
      expect(named.recordset.map((r) => r.op)).toEqual([2, 3]);
      const all = await p.request().query('SELECT * FROM cdc.dbo_Persons_CT');
      expect(all.recordset.map((r) => [r.__$operation, r.Id, r.Name, r.Email])).toEqual([
        [2, 1, 'p1', 'p1@example.com'],
        [2, 2, 'p2', 'p2@example.com'],
        [2, 3, 'p3', 'p3@example.com'],
        [3, 2, 'p2', 'p2@example.com'],
        [4, 2, 'two', 'p2@example.com'],
      ]);
      const counted = await p.request().query('SELECT COUNT_BIG(*) AS n, MAX(Name) AS top_name FROM cdc.dbo_Persons_CT WHERE __$operation <> 3');
      expect(counted.recordset).toEqual([{ n: '4', top_name: 'two' }]);
      // Each row's commit time, looked up by its own LSN; and by an LSN given as a parameter.
      const times = await p.request().query(
        'SELECT __$start_lsn AS lsn, (SELECT CONVERT(nvarchar(30), m.tran_end_time, 126) FROM cdc.lsn_time_mapping AS m WHERE m.start_lsn = __$start_lsn) AS t FROM cdc.dbo_Persons_CT ORDER BY __$start_lsn, __$command_id, __$seqval, __$operation',
      );
      // Style 126 of a datetime leaves out a zero fraction.
      const commitTime = (lsn: Buffer) => db.model.lsnTimeMapping.find((e) => e.lsn.equals(lsn))!.commitTime.replace(/\.000$/, '');
      expect(times.recordset.map((r) => r.t)).toEqual(times.recordset.map((r) => commitTime(r.lsn)));
      const last = db.model.lsnTimeMapping.at(-1)!;
      const byParameter = await p
        .request()
        .input('lsn', mssql.VarBinary(10), Buffer.from(last.lsn))
        .query('SELECT (SELECT CONVERT(nvarchar(30), m.tran_end_time, 126) FROM cdc.lsn_time_mapping AS m WHERE m.start_lsn = @lsn) AS t');
      expect(byParameter.recordset).toEqual([{ t: last.commitTime.replace(/\.000$/, '') }]);
    } finally {
      await p.close();
    }
  });
});
