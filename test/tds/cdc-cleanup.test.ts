/**
 * The cleanup job while a read of a change table or of cdc.lsn_time_mapping is open, through the
 * real driver: SQL Server's scan goes on from the key it stands on, so deleting rows it has passed
 * takes nothing from what it has still to send. The test server's scans must do the same, or a test
 * of dstream under cleanup would see rows lost that SQL Server never loses (or miss a loss dstream
 * causes).
 */
import mssql from 'mssql';
import { describe, expect, it } from 'vitest';
import { shopModel, type CdcModel } from '../support/cdc-model.js';
import { sqlServerForTest } from '../support/sql-server.js';

/**
 * Streams `query` through the driver; once 1,000 rows are in, pauses the request, lets the server
 * fill the sockets, runs `meanwhile` (the cleanup) and resumes. Returns every row.
 */
async function readAcross<R>(m: CdcModel, query: string, inputs: Record<string, Buffer>, meanwhile: () => void): Promise<R[]> {
  const db = await sqlServerForTest(m);
  const pool = new mssql.ConnectionPool(mssql.ConnectionPool.parseConnectionString(db.connectionString));
  await pool.connect();
  try {
    const request = pool.request();
    request.stream = true;
    for (const [name, value] of Object.entries(inputs)) request.input(name, mssql.VarBinary(10), value);
    const rows: R[] = [];
    const done = new Promise<void>((resolve, reject) => {
      request.on('row', (row: R) => {
        rows.push(row);
        if (rows.length !== 1000) return;
        request.pause();
        setTimeout(() => {
          meanwhile();
          request.resume();
        }, 50);
      });
      request.on('error', reject);
      request.on('done', () => resolve());
    });
    void request.query(query);
    await done;
    return rows;
  } finally {
    await pool.close();
    await db.close();
  }
}

describe('cleanup under an open read', () => {
  it('deleting rows the scan has passed skips none of the rows after them', async () => {
    const m = shopModel();
    // Rows of ~1 KB: more than the sockets between the two ends hold, so the server's scan is
    // still under way (waiting for the client to read) when the cleanup runs.
    const name = 'x'.repeat(500);
    const total = 20_000;
    for (let id = 1; id <= total; id++) m.commit([{ table: 'Persons', op: 'insert', row: { Id: id, Name: name } }]);
    const lsns = m.instance('dbo_Persons')!.changes.map((r) => r.__$start_lsn);
    // Rows the server's scan had built when the cleanup ran (undefined: no scan was open).
    let scanAt: number | undefined;
    const rows = await readAcross<{ Id: number }>(
      m,
      'SELECT Id, Name FROM cdc.dbo_Persons_CT WHERE __$start_lsn >= @from AND __$start_lsn <= @to ORDER BY __$start_lsn',
      { from: lsns[0]!, to: lsns[lsns.length - 1]! },
      () => {
        // The first 500 commits are read; cleanup removes them while the scan stands further on.
        scanAt = m.openStreams === 1 ? m.changeTableRowsBuilt : undefined;
        m.cleanup(`0x${lsns[500]!.toString('hex')}`);
      },
    );
    // The cleanup ran with the scan under way, past the rows it removed and short of the end.
    expect(scanAt).toBeGreaterThan(1000);
    expect(scanAt).toBeLessThan(total);
    expect(m.instance('dbo_Persons')!.changes.length).toBe(total - 500);
    expect(rows.length).toBe(total);
    expect(rows.map((r) => r.Id)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
  });

  it('of cdc.lsn_time_mapping: pruning the entries the scan has passed skips none of those after them', async () => {
    const m = shopModel();
    // Entries of ~60 bytes on the wire: enough of them to be more than the sockets hold.
    const total = 300_000;
    const lsns: string[] = [];
    for (let n = 0; n < total; n++) lsns.push(m.tick().toLowerCase());
    let scanAt: number | undefined;
    const rows = await readAcross<{ start_lsn: Buffer }>(m, 'SELECT start_lsn FROM cdc.lsn_time_mapping ORDER BY start_lsn', {}, () => {
      scanAt = m.mappingRowsBuilt;
      m.cleanup(lsns[500]!);
    });
    expect(scanAt).toBeGreaterThan(1000);
    expect(scanAt).toBeLessThan(total);
    expect(m.lsnTimeMapping.length).toBe(total - 500);
    expect(rows.length).toBe(total);
    // Compared where they first differ: a diff of 300,000 entries would take minutes to print.
    const seen = rows.map((r) => `0x${r.start_lsn.toString('hex')}`);
    const differs = seen.findIndex((lsn, i) => lsn !== lsns[i]);
    expect(differs === -1 ? 'none' : `entry ${differs}: ${seen[differs]}, expected ${lsns[differs]}`).toBe('none');
  });
});
