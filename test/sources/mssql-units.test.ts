import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { RowCursor } from '../../lib/sources/mssql/reader/merge.js';
import type { Segment } from '../../lib/sources/mssql/reader/core.js';
import { SqlCheckpointStore } from '../../lib/state/sql-store.js';
import { compareLsn, incrementLsn, lsnFromHex, lsnOf, lsnToHex } from '../../lib/sources/mssql/lsn.js';
import { SQL, selectExpression } from '../../lib/sources/mssql/sql.js';
import { parseTableRef, quoteName } from '../../lib/sources/mssql/tables.js';
import { jsonValue, rowMapper, typeClassOf, valuesMapper } from '../../lib/sources/mssql/types.js';
import { isConnectionLost, sqlFailure } from '../../lib/sources/mssql/errors.js';
import { describeConnection, sqlServerConnector } from '../../lib/sources/mssql/sqlserver.js';
import { sqlServerForTest } from '../support/sql-server.js';
import { IDLE_POLLS_AT_BASE, idleWait, segmentsOf } from '../../lib/sources/mssql/reader/windows.js';
import type { TableState } from '../../lib/sources/mssql/reader/core.js';
import type { CaptureInstance } from '../../lib/sources/mssql/queries.js';

describe('LSNs', () => {
  it('round-trip as 0x + 20 upper-case hex digits, order as text and as bytes', () => {
    const a = lsnFromHex('0x0000002a000001f00003');
    expect(lsnToHex(a)).toBe('0x0000002A000001F00003');
    expect(compareLsn(a, lsnFromHex('0x0000002A000001F00004'))).toBeLessThan(0);
    expect(lsnToHex(incrementLsn(lsnFromHex('0x000000000000000000FF')))).toBe('0x00000000000000000100');
    expect(lsnToHex(lsnOf(0x2a_0000_0010n))).toBe('0x00000000002A00000010');
    expect(() => lsnFromHex('0x12', 'start')).toThrow(/start must be 10 bytes in hex/);
  });

  it('write every byte value as its two hex digits, and compare as Buffer.compare does', () => {
    const lsns: Buffer[] = [];
    for (let v = 0; v < 256; v++) lsns.push(Buffer.from([v, 255 - v, v ^ 0x5a, 0, 1, v, 0x80, 0x7f, (v * 7) & 255, v]));
    lsns.push(Buffer.alloc(10), Buffer.alloc(10, 0xff));
    for (const lsn of lsns) expect(lsnToHex(lsn)).toBe(`0x${lsn.toString('hex').toUpperCase()}`);
    // Not ten bytes: the same form.
    expect(lsnToHex(Buffer.from([0xab, 0x01]))).toBe('0xAB01');
    expect(lsnToHex(new Uint8Array([0, 0xfe]))).toBe('0x00FE');
    for (let i = 0; i < lsns.length; i++) {
      const a = lsns[i]!;
      const b = lsns[(i * 31 + 7) % lsns.length]!;
      expect(compareLsn(a, b)).toBe(Buffer.compare(a, b));
      expect(compareLsn(a, Buffer.from(a))).toBe(0);
    }
    expect(compareLsn(Buffer.from([1, 2]), Buffer.from([1, 2, 0]))).toBe(-1);
    expect(compareLsn(Buffer.from([1, 3]), Buffer.from([1, 2, 0]))).toBe(1);
  });
});

describe('table names', () => {
  it('reads Table, schema.Table and bracketed names', () => {
    expect(parseTableRef('Persons')).toEqual({ schema: 'dbo', table: 'Persons' });
    expect(parseTableRef('sales.Orders')).toEqual({ schema: 'sales', table: 'Orders' });
    expect(parseTableRef('[my.schema].[Order]]s]')).toEqual({ schema: 'my.schema', table: 'Order]s' });
    expect(() => parseTableRef('a.b.c')).toThrow(/write it as Table or schema\.Table/);
    expect(() => parseTableRef('sales.')).toThrow(/write it as Table/);
    expect(quoteName('Order]s')).toBe('[Order]]s]');
  });
});

describe('value mapping (every SQL type class)', () => {
  const cases: Array<[string, string, string]> = [
    ['int', 'number', '[c]'],
    ['tinyint', 'number', '[c]'],
    ['float', 'number', '[c]'],
    ['bigint', 'bigint', '[c]'],
    ['decimal', 'decimal', 'CONVERT(nvarchar(64), [c]) AS [c]'],
    ['numeric', 'decimal', 'CONVERT(nvarchar(64), [c]) AS [c]'],
    ['money', 'decimal', 'CONVERT(nvarchar(64), [c], 2) AS [c]'],
    ['smallmoney', 'decimal', 'CONVERT(nvarchar(64), [c], 2) AS [c]'],
    ['bit', 'boolean', '[c]'],
    ['nvarchar', 'string', '[c]'],
    ['xml', 'string', 'CONVERT(nvarchar(max), [c]) AS [c]'],
    ['uniqueidentifier', 'guid', '[c]'],
    ['date', 'date', 'CONVERT(nchar(10), [c], 23) AS [c]'],
    ['datetime2', 'datetime', 'CONVERT(nvarchar(40), [c], 126) AS [c]'],
    ['datetime', 'datetime', 'CONVERT(nvarchar(40), [c], 126) AS [c]'],
    ['smalldatetime', 'datetime', 'CONVERT(nvarchar(40), [c], 126) AS [c]'],
    ['datetimeoffset', 'datetimeoffset', 'CONVERT(nvarchar(40), [c], 126) AS [c]'],
    ['time', 'time', 'CONVERT(nvarchar(16), [c]) AS [c]'],
    ['varbinary', 'binary', '[c]'],
    ['timestamp', 'binary', '[c]'],
    ['geography', 'spatial', '[c].STAsText() AS [c]'],
    ['hierarchyid', 'hierarchyid', '[c].ToString() AS [c]'],
    ['sql_variant', 'variant', 'CONVERT(nvarchar(max), [c]) AS [c]'],
    ['vector', 'other', 'CONVERT(nvarchar(max), [c]) AS [c]'],
  ];
  it.each(cases)('%s is %s, selected as %s', (type, cls, expr) => {
    expect(typeClassOf(type)).toBe(cls);
    expect(selectExpression({ name: 'c', type })).toBe(expr);
  });

  it('writes driver values as JSON without losing meaning', () => {
    expect(jsonValue(null)).toBeNull();
    expect(jsonValue(undefined)).toBeNull();
    expect(jsonValue(Buffer.from([0xde, 0xad, 0xbe, 0xef]))).toBe('3q2+7w==');
    expect(jsonValue(new Uint8Array([1, 2]))).toBe('AQI=');
    expect(jsonValue(new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6)))).toBe('2026-01-02T03:04:05.006Z');
    expect(jsonValue(2n ** 63n - 1n)).toBe('9223372036854775807');
    expect(jsonValue(true)).toBe(true);
    expect(jsonValue(1.5)).toBe(1.5);
    const map = rowMapper([{ name: 'Id', type: 'int' }, { name: 'Amount', type: 'decimal' }, { name: 'Photo', type: 'varbinary' }, { name: 'Seen', type: 'datetime2' }, { name: 'Gone', type: 'nvarchar' }]);
    expect(map({ __$start_lsn: Buffer.alloc(10), Id: 7, Amount: '12345678901234567890.1234', Photo: Buffer.from('hi'), Seen: '2026-11-26T09:00:00.1234567', Gone: null })).toEqual({
      Id: 7,
      Amount: '12345678901234567890.1234',
      Photo: 'aGk=',
      Seen: '2026-11-26T09:00:00.1234567',
      Gone: null,
    });
  });

  it('maps a change row to its data by the capture instance\'s columns, whatever their names', () => {
    const names = ['Id', 'Na"me', 'back\\slash', "it's", 'line\u2028sep', '42', 'constructor', 'Zoë 😀', '${x}', ' '];
    const columns = names.map((name) => ({ name, type: 'nvarchar' }));
    const row = [Buffer.alloc(10), Buffer.alloc(10), 2, ...names.map((_, i) => (i % 3 === 0 ? null : i % 3 === 1 ? `v${i}` : Buffer.from([i])))];
    const data = valuesMapper(columns, 3)(row);
    const expected: Record<string, unknown> = {};
    names.forEach((name, i) => (expected[name] = jsonValue(row[3 + i])));
    // The same keys in the same order (integer-like names first, as in any object), the same values.
    expect(JSON.stringify(data)).toBe(JSON.stringify(expected));
    expect(Object.getPrototypeOf(data)).toBe(Object.prototype);
    // __proto__ is a column name like any other: a data property, not the object's prototype.
    const odd = valuesMapper([{ name: 'Id', type: 'int' }, { name: '__proto__', type: 'nvarchar' }], 0)([1, 'p']);
    expect(Object.getPrototypeOf(odd)).toBe(Object.prototype);
    expect(JSON.stringify(odd)).toBe('{"Id":1,"__proto__":"p"}');
  });

  it('selects change rows ordered by LSN, seqval and operation, with before-images only when asked', () => {
    const text = SQL.changes("dbo_Per]sons", [{ name: 'Id', type: 'int' }, { name: 'Total', type: 'money' }], false);
    expect(text).toContain('FROM cdc.[fn_cdc_get_all_changes_dbo_Per]]sons](@from, @to, N\'all\')');
    expect(text).toContain('ORDER BY __$start_lsn, __$seqval, __$operation');
    expect(text).toContain('CONVERT(nvarchar(64), [Total], 2) AS [Total]');
    expect(SQL.changes('x', [], true)).toContain("N'all update old'");
  });
});

describe('SQL Server errors', () => {
  it('tells lost connections (retry) from refused logins and permissions (report)', () => {
    const err = (o: object) => Object.assign(new Error('m'), o);
    expect(isConnectionLost(err({ name: 'ConnectionError', code: 'ESOCKET' }))).toBe(true);
    expect(isConnectionLost(err({ name: 'RequestError', code: 'ECONNCLOSED' }))).toBe(true);
    expect(isConnectionLost(err({ name: 'RequestError', number: 40613 }))).toBe(true);
    expect(isConnectionLost(err({ name: 'ConnectionError', code: 'ELOGIN' }))).toBe(false);
    expect(isConnectionLost(err({ name: 'RequestError', number: 229 }))).toBe(false);
    expect(sqlFailure(err({ name: 'RequestError', number: 229 }), 'db:1433/x', 'reading dbo.T').code).toBe('DSTREAM_ERR_SQL_PERMISSION');
    expect(sqlFailure(err({ name: 'RequestError', number: 102 }), 'db:1433/x', 'reading dbo.T').message).toBe('reading dbo.T failed at db:1433/x: m');
    const tls = Object.assign(new Error('Failed to connect to db:1433 - self-signed certificate'), { name: 'ConnectionError', code: 'ESOCKET' });
    expect(sqlFailure(tls, 'db:1433/x', 'connecting').message).toMatch(/self-signed certificate \(.*add TrustServerCertificate=true/);
  });

  it('describes a connection string by host, port and database, never the password', () => {
    const d = describeConnection('Server=db.example,1444;Database=shop;User Id=dstream;Password=s3cret!;TrustServerCertificate=true');
    expect(d).toBe('db.example:1444/shop');
    expect(describeConnection('Server=tcp:db.example;Database=shop;Password=s3cret!')).not.toContain('s3cret');
  });
});

describe('SqlCheckpointStore (through the driver, against the TDS test server)', () => {
  it('stores an mssql-cdc position one row per table, only forward, and reassembles it', async () => {
    const db = await sqlServerForTest();
    const m = db.model;
    const store = new SqlCheckpointStore(sqlServerConnector(db.connectionString), 'dstream.checkpoints');
    await expect(store.load('t')).rejects.toThrow(/checkpoint table dstream\.checkpoints does not exist .*dstream init/);
    const admin = await sqlServerConnector(db.connectionString)();
    await admin.createCheckpointTable({ schema: 'dstream', table: 'checkpoints' });
    await admin.close();
    expect(await store.load('t')).toBeUndefined();
    await store.save('t', { lsn: '0x00000000000000000010', tables: { 'dbo.Persons': '0x00000000000000000010', 'dbo.Customers': '0x00000000000000000020' } }, 'mssql-cdc');
    // Another worker's table and a stale write from a worker that lost its lease.
    await store.save('t', { lsn: '0x00000000000000000030', tables: { 'sales.Orders': '0x00000000000000000030' } });
    await store.save('t', { lsn: '0x00000000000000000001', tables: { 'dbo.Persons': '0x00000000000000000001' } });
    const loaded = await store.load('t');
    expect(loaded).toMatchObject({
      task: 't',
      source: 'mssql-cdc',
      position: { lsn: '0x00000000000000000010', tables: { 'dbo.Persons': '0x00000000000000000010', 'dbo.Customers': '0x00000000000000000020', 'sales.Orders': '0x00000000000000000030' } },
    });
    // A snapshot under way is kept in its table's row, and replaced once the table has an LSN.
    const snapshot = { lsn: '0x00000000000000000040', rows: 3, key: ['east', { binary: '0x00FF' }] };
    await store.save('t', { lsn: '0x00000000000000000040', tables: {}, snapshots: { 'dbo.Lines': snapshot } });
    expect((await store.load('t'))?.position).toMatchObject({ snapshots: { 'dbo.Lines': snapshot } });
    // A stale snapshot write (a worker that lost its lease, its snapshot older) moves no table back behind its LSN.
    await store.save('t', { lsn: '0x00000000000000000010', tables: {}, snapshots: { 'dbo.Persons': { ...snapshot, lsn: '0x00000000000000000010' } } });
    await store.save('t', { lsn: '0x00000000000000000050', tables: { 'dbo.Lines': '0x00000000000000000050' } });
    expect((await store.load('t'))?.position).toEqual({
      lsn: '0x00000000000000000010',
      tables: { 'dbo.Persons': '0x00000000000000000010', 'dbo.Customers': '0x00000000000000000020', 'sales.Orders': '0x00000000000000000030', 'dbo.Lines': '0x00000000000000000050' },
    });
    // A later snapshot (on_gap = "snapshot" after cleanup overtook the table) does replace it.
    const later = { ...snapshot, lsn: '0x00000000000000000060' };
    await store.save('t', { lsn: '0x00000000000000000060', tables: {}, snapshots: { 'dbo.Customers': later } });
    expect((await store.load('t'))?.position).toMatchObject({ tables: { 'dbo.Persons': '0x00000000000000000010' }, snapshots: { 'dbo.Customers': later } });
    expect(((await store.load('t'))?.position as { tables: object }).tables).not.toHaveProperty('dbo.Customers');
    // Any other position is kept whole.
    await store.save('gen', { lsn: '0x1', tx: 3, rows: 9 }, 'generator');
    expect((await store.load('gen'))?.position).toEqual({ lsn: '0x1', tx: 3, rows: 9 });
    expect(await store.reset('t')).toBe(true);
    expect(await store.reset('t')).toBe(false);
    expect(await store.load('gen')).toBeDefined();
    // A dropped connection is reconnected once.
    m.dropConnections();
    expect((await store.load('gen'))?.position).toEqual({ lsn: '0x1', tx: 3, rows: 9 });
    await store.close();
  });
});

describe('idle polls', () => {
  it('wait the base interval for the first few, then double up to the ceiling', () => {
    const waits = Array.from({ length: 10 }, (_, i) => idleWait(i + 1, 500, 5000));
    expect(IDLE_POLLS_AT_BASE).toBe(3);
    // A pause of 1.5 s in a steady stream does not stretch the next change's wait past the interval.
    expect(waits).toEqual([500, 500, 500, 1000, 2000, 4000, 5000, 5000, 5000, 5000]);
    // A ceiling at the base interval: no back-off at all; far past it, no overflow.
    expect(Array.from({ length: 6 }, (_, i) => idleWait(i + 1, 500, 500))).toEqual([500, 500, 500, 500, 500, 500]);
    expect(idleWait(10_000, 5, 60_000)).toBe(60_000);
  });
});

describe('segments (pure logic)', () => {
  const instance = (columns: CaptureInstance['columns'], startLsn = lsnOf(1)): CaptureInstance => ({ name: 'dbo_Persons', schema: 'dbo', table: 'Persons', startLsn, createDate: '2026-01-01T00:00:00', columns });
  const table = (i: CaptureInstance): TableState => ({ ref: { schema: 'dbo', table: 'Persons' }, key: 'dbo.Persons', instances: [i], from: lsnOf(5), start: lsnOf(1), readable: true });
  const columns = () => [{ name: 'Id', type: 'int', ordinal: 1 }, { name: 'Name', type: 'nvarchar', ordinal: 2 }];

  it('of every window share one mapper per column list (each window lists its capture instances anew)', () => {
    const [a] = segmentsOf(table(instance(columns())), lsnOf(9), true);
    // The next window: new objects, the start raised by cleanup, the same columns.
    const [b] = segmentsOf(table(instance(columns(), lsnOf(3))), lsnOf(9), true);
    expect(b!.map).toBe(a!.map);
    expect(b!.map([lsnOf(5), lsnOf(5), 2, 1, null, 7, 'Ada'])).toEqual({ Id: 7, Name: 'Ada' });
    // Another column list, or the other query mode (no __$command_id): a mapper of its own.
    const [c] = segmentsOf(table(instance([...columns(), { name: 'Email', type: 'nvarchar', ordinal: 3 }])), lsnOf(9), true);
    const [d] = segmentsOf(table(instance(columns())), lsnOf(9), false);
    expect(c!.map).not.toBe(a!.map);
    expect(d!.map).not.toBe(a!.map);
    expect(d!.map([lsnOf(5), lsnOf(5), 2, null, 7, 'Ada'])).toEqual({ Id: 7, Name: 'Ada' });
  });
});

describe('RowCursor: a change stream that failed, ended or closed before the merge looked at it (stream logic only)', () => {
  const segment = { before: undefined, table: { key: 'dbo.Persons' } } as unknown as Segment;
  const settled = async (stream: Readable) => {
    await new Promise((resolve) => setImmediate(resolve));
    // Its events have all been emitted: a listener attached now hears none of them.
    expect(stream.listenerCount('error') + stream.listenerCount('end')).toBe(0);
    return stream;
  };

  it('reports the error the stream already failed with', async () => {
    const failed = new Readable({ objectMode: true, read() {} });
    failed.on('error', () => undefined);
    failed.destroy(Object.assign(new Error('Connection lost - read ECONNRESET'), { code: 'ESOCKET' }));
    await new Promise((resolve) => setImmediate(resolve));
    failed.removeAllListeners('error');
    await expect(new RowCursor(await settled(failed), segment).next()).rejects.toThrow(/ECONNRESET/);
  });

  it('ends at once on a stream that already ended, and fails on one closed before its end', async () => {
    const ended = Readable.from([], { objectMode: true });
    ended.resume();
    await new Promise((resolve) => ended.once('end', resolve));
    await expect(new RowCursor(await settled(ended), segment).next()).resolves.toBeNull();
    const closed = new Readable({ objectMode: true, read() {} });
    closed.destroy();
    await new Promise((resolve) => closed.once('close', resolve));
    await expect(new RowCursor(await settled(closed), segment).next()).rejects.toMatchObject({ code: 'ECONNCLOSED' });
  });
});
