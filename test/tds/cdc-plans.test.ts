/**
 * Statements the CDC backend runs the way SQL Server's plan would, through the real driver: a count
 * of a range of a clustered index reads its keys only (an index-only seek) and builds no row. What
 * is asserted is the answer, against the model's own rows and against the same range read row by
 * row, at every TOP up to and past the end of the range, so a shortcut can never change a count.
 */
import mssql from 'mssql';
import { describe, expect, it } from 'vitest';
import { compareLsn, shopModel, type CdcModel } from '../support/cdc-model.js';
import { sqlServerForTest, type TestSqlServer } from '../support/sql-server.js';

async function pool(db: TestSqlServer): Promise<mssql.ConnectionPool> {
  const config = mssql.ConnectionPool.parseConnectionString(db.connectionString);
  const p = new mssql.ConnectionPool({ ...config, options: { ...config.options, useUTC: true } });
  await p.connect();
  return p;
}

/** Commits of 1, 2 and 3 Persons rows (an update is two rows with one LSN), and a quiet-period entry between. */
function commits(m: CdcModel): void {
  let id = 0;
  for (let c = 0; c < 6; c++) {
    const rows = Array.from({ length: (c % 3) + 1 }, () => ({ table: 'Persons', op: 'insert' as const, row: { Id: ++id, Name: `p${id}` } }));
    m.commit(rows);
    if (c === 2) m.tick();
    if (c === 3) m.commit([{ table: 'Persons', op: 'update', row: { Id: 1, Name: 'one' } }]);
  }
}

const lsnOf = (hex: string) => Buffer.from(hex.slice(2), 'hex');
const hex = (b: Buffer | null) => (b === null ? null : `0x${b.toString('hex')}`);

const COUNT_ROWS = `SELECT COUNT_BIG(*) AS n, MAX(w.__$start_lsn) AS last FROM (SELECT TOP (@limit) __$start_lsn FROM cdc.dbo_Persons_CT
WHERE __$start_lsn >= @from AND __$start_lsn <= @to ORDER BY __$start_lsn) AS w`;
// The same range read row by row: Name is not in the index's key, so every row is built.
const READ_ROWS = `SELECT TOP (@limit) __$start_lsn AS lsn, Name FROM cdc.dbo_Persons_CT
WHERE __$start_lsn >= @from AND __$start_lsn <= @to ORDER BY __$start_lsn`;
const COUNT_COMMITS = `SELECT COUNT_BIG(*) AS n, MAX(w.start_lsn) AS last FROM (SELECT TOP (@limit) start_lsn FROM cdc.lsn_time_mapping
WHERE start_lsn >= @from AND start_lsn <= @to ORDER BY start_lsn) AS w`;

describe('a count of a range by key (an index-only seek)', () => {
  it('counts exactly the change rows TOP allows within the range, ending on the LSN of the last, without building a row', async () => {
    const m = shopModel();
    commits(m);
    const db = await sqlServerForTest(m);
    const p = await pool(db);
    try {
      const all = m.instance('dbo_Persons')!.changes.map((r) => r.__$start_lsn);
      const lsns = [...new Set(all.map((l) => hex(l)!))];
      expect(all.length).toBeGreaterThan(lsns.length);
      // Every range between two commits' LSNs, every TOP from 0 to past the rows in it.
      for (const [i, from] of lsns.entries()) {
        for (const to of lsns.slice(i)) {
          const inRange = all.filter((l) => compareLsn(l, lsnOf(from)) >= 0 && compareLsn(l, lsnOf(to)) <= 0);
          for (let limit = 0; limit <= inRange.length + 1; limit++) {
            const request = () => p.request().input('from', mssql.VarBinary(10), lsnOf(from)).input('to', mssql.VarBinary(10), lsnOf(to)).input('limit', mssql.Int, limit);
            const built = m.changeTableRowsBuilt;
            const { recordset: [counted] } = await request().query(COUNT_ROWS);
            expect(m.changeTableRowsBuilt).toBe(built);
            const taken = inRange.slice(0, limit);
            expect({ n: counted.n, last: hex(counted.last) }).toEqual({ n: String(taken.length), last: hex(taken.at(-1) ?? null) });
            // A TOP that ends inside a commit counts only the rows it allows (the reader moves its end back to that commit).
            const { recordset: read } = await request().query(READ_ROWS);
            expect(m.changeTableRowsBuilt).toBeGreaterThanOrEqual(built + read.length);
            expect({ n: String(read.length), last: hex(read.at(-1)?.lsn ?? null) }).toEqual({ n: counted.n, last: hex(counted.last) });
          }
        }
      }
    } finally {
      await p.close();
    }
  }, 60_000);

  it('counts the commits of cdc.lsn_time_mapping only up to the max LSN, as the capture job has written them', async () => {
    const m = shopModel();
    commits(m);
    m.captureLag = true;
    m.commit([{ table: 'Persons', op: 'insert', row: { Id: 100, Name: 'late' } }]);
    const db = await sqlServerForTest(m);
    const p = await pool(db);
    try {
      const max = lsnOf(m.currentMaxLsn!);
      const visible = m.lsnTimeMapping.filter((e) => compareLsn(e.lsn, max) <= 0);
      expect(visible.length).toBe(m.lsnTimeMapping.length - 1);
      const first = m.lsnTimeMapping[0]!.lsn;
      // @to past the max LSN: the commit not yet captured is not counted.
      const past = m.lsnTimeMapping.at(-1)!.lsn;
      for (let limit = 0; limit <= visible.length + 1; limit++) {
        const { recordset: [c] } = await p.request().input('from', mssql.VarBinary(10), first).input('to', mssql.VarBinary(10), past).input('limit', mssql.Int, limit).query(COUNT_COMMITS);
        const taken = visible.slice(0, limit);
        expect({ n: c.n, last: hex(c.last) }).toEqual({ n: String(taken.length), last: hex(taken.at(-1)?.lsn ?? null) });
      }
      m.runCapture();
      const { recordset: [after] } = await p.request().input('from', mssql.VarBinary(10), first).input('to', mssql.VarBinary(10), past).input('limit', mssql.Int, 1000).query(COUNT_COMMITS);
      expect({ n: after.n, last: hex(after.last) }).toEqual({ n: String(m.lsnTimeMapping.length), last: hex(past) });
    } finally {
      await p.close();
    }
  });

  it('still applies what the seek does not cover: a second bound, a NULL bound, another condition on the key, an open range', async () => {
    const m = shopModel();
    commits(m);
    const db = await sqlServerForTest(m);
    const p = await pool(db);
    try {
      const all = m.instance('dbo_Persons')!.changes.map((r) => r.__$start_lsn);
      const [a, b, c] = [...new Set(all.map((l) => hex(l)!))].map(lsnOf);
      const count = async (where: string, params: Record<string, Buffer | null> = {}) => {
        const r = p.request();
        for (const [k, v] of Object.entries(params)) r.input(k, mssql.VarBinary(10), v);
        const built = m.changeTableRowsBuilt;
        const { recordset } = await r.query(`SELECT COUNT(*) AS n FROM (SELECT TOP (100) __$start_lsn FROM cdc.dbo_Persons_CT${where} ORDER BY __$start_lsn) AS w`);
        expect(m.changeTableRowsBuilt).toBe(built);
        return recordset[0].n as number;
      };
      const between = (lo: Buffer, hi: Buffer) => all.filter((l) => compareLsn(l, lo) >= 0 && compareLsn(l, hi) <= 0).length;
      expect(await count('')).toBe(all.length);
      expect(await count(' WHERE __$start_lsn >= @a AND __$start_lsn >= @b', { a: a!, b: b! })).toBe(all.filter((l) => compareLsn(l, b!) >= 0).length);
      expect(await count(' WHERE __$start_lsn >= @a AND __$start_lsn <= @c AND __$start_lsn <> @b', { a: a!, b: b!, c: c! })).toBe(between(a!, c!) - between(b!, b!));
      expect(await count(' WHERE __$start_lsn >= @a AND __$start_lsn <= @c', { a: null, c: c! })).toBe(0);
      expect(await count(' WHERE __$start_lsn > @a', { a: a! })).toBe(all.length - between(a!, a!));
      // MAX and MIN of keys that come in order, some filtered out by the select around them.
      const { recordset: ends } = await p
        .request()
        .input('c', mssql.VarBinary(10), c!)
        .query('SELECT MAX(w.k) AS hi, MIN(w.k) AS lo, COUNT(*) AS n FROM (SELECT TOP (100) __$start_lsn AS k FROM cdc.dbo_Persons_CT ORDER BY __$start_lsn) AS w WHERE w.k <> @c');
      const others = all.filter((l) => compareLsn(l, c!) !== 0);
      expect({ hi: hex(ends[0].hi), lo: hex(ends[0].lo), n: ends[0].n }).toEqual({ hi: hex(others.at(-1)!), lo: hex(others[0]!), n: others.length });
      // Counted straight from the table, without a derived table: the same seek.
      const built = m.changeTableRowsBuilt;
      const { recordset } = await p.request().input('b', mssql.VarBinary(10), b!).query('SELECT COUNT_BIG(*) AS n, MIN(__$start_lsn) AS lo FROM cdc.dbo_Persons_CT WHERE __$start_lsn >= @b');
      expect(m.changeTableRowsBuilt).toBe(built);
      expect({ n: recordset[0].n, lo: hex(recordset[0].lo) }).toEqual({ n: String(all.filter((l) => compareLsn(l, b!) >= 0).length), lo: hex(b!) });
    } finally {
      await p.close();
    }
  });
});

describe('values the change read converts for every row', () => {
  it('writes dates and times in the CONVERT styles dstream selects, before and after 1970, and varchar in code page 1252', async () => {
    const db = await sqlServerForTest(shopModel());
    const p = await pool(db);
    try {
      for (const iso of ['2026-01-01T12:00:00.000Z', '1999-12-31T23:59:59.997Z', '1969-07-20T20:17:40.500Z', '0001-01-01T00:00:00.000Z', '9999-12-31T23:59:59.999Z']) {
        const { recordset } = await p
          .request()
          .input('t', mssql.DateTime2(3), new Date(iso))
          .query("SELECT CONVERT(nvarchar(30), @t, 126) AS iso, CONVERT(nvarchar(30), @t) AS plain, CONVERT(nchar(10), @t, 23) AS day, CONVERT(varchar(30), @t, 126) AS narrow");
        expect(recordset[0]).toEqual({ iso: iso.slice(0, 23), plain: iso.slice(0, 23).replace('T', ' '), day: iso.slice(0, 10), narrow: iso.slice(0, 23) });
      }
      const { recordset } = await p.request().input('v', mssql.NVarChar(40), 'café €5 – Ω').query('SELECT CONVERT(varchar(40), @v) AS v');
      // Characters outside code page 1252 become '?', as SQL Server converts them.
      expect(recordset[0].v).toBe('café €5 – ?');
    } finally {
      await p.close();
    }
  });
});
