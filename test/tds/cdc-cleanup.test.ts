/**
 * The cleanup job while a read of a change table or of cdc.lsn_time_mapping is open, through the
 * real driver: SQL Server's scan goes on from the key it stands on, so deleting rows it has passed
 * takes nothing from what it has still to send. The test server's scans must do the same, or a test
 * of dstream under cleanup would see rows lost that SQL Server never loses (or miss a loss dstream
 * causes).
 */
import mssql from 'mssql';
import { describe, expect, it } from 'vitest';
import { shopModel } from '../support/cdc-model.js';
import { sqlServerForTest } from '../support/sql-server.js';

describe('cleanup under an open read', () => {
  it('deleting rows the scan has passed skips none of the rows after them', async () => {
    const m = shopModel();
    // Rows of ~1 KB: more than the sockets between the two ends hold, so the server's scan is
    // still under way (waiting for the client to read) when the cleanup runs.
    const name = 'x'.repeat(500);
    const total = 20_000;
    for (let id = 1; id <= total; id++) m.commit([{ table: 'Persons', op: 'insert', row: { Id: id, Name: name } }]);
    const lsns = m.instance('dbo_Persons')!.changes.map((r) => r.__$start_lsn);
    const db = await sqlServerForTest(m);
    const config = mssql.ConnectionPool.parseConnectionString(db.connectionString);
    const pool = new mssql.ConnectionPool(config);
    await pool.connect();
    try {
      const request = pool.request();
      request.stream = true;
      request.input('from', mssql.VarBinary(10), lsns[0]!).input('to', mssql.VarBinary(10), lsns[lsns.length - 1]!);
      const ids: number[] = [];
      // Rows the server's scan had built when the cleanup ran (undefined: no scan was open).
      let scanAt: number | undefined;
      const done = new Promise<void>((resolve, reject) => {
        request.on('row', (row: { Id: number }) => {
          ids.push(row.Id);
          if (ids.length === 1000) {
            request.pause();
            // The first 500 commits are read; cleanup removes them while the scan stands further on.
            setTimeout(() => {
              scanAt = m.openStreams === 1 ? m.changeTableRowsBuilt : undefined;
              m.cleanup(`0x${lsns[500]!.toString('hex')}`);
              request.resume();
            }, 50);
          }
        });
        request.on('error', reject);
        request.on('done', () => resolve());
      });
      void request.query('SELECT Id, Name FROM cdc.dbo_Persons_CT WHERE __$start_lsn >= @from AND __$start_lsn <= @to ORDER BY __$start_lsn');
      await done;
      // The cleanup ran with the scan under way, past the rows it removed and short of the end.
      expect(scanAt).toBeGreaterThan(1000);
      expect(scanAt).toBeLessThan(total);
      expect(m.instance('dbo_Persons')!.changes.length).toBe(total - 500);
      expect(ids.length).toBe(total);
      expect(ids).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    } finally {
      await pool.close();
      await db.close();
    }
  });

  it('of cdc.lsn_time_mapping: pruning the entries the scan has passed skips none of those after them', async () => {
    const m = shopModel();
    // Entries of ~60 bytes on the wire: enough of them to be more than the sockets hold.
    const total = 300_000;
    const lsns: string[] = [];
    for (let n = 0; n < total; n++) lsns.push(m.tick().toLowerCase());
    const db = await sqlServerForTest(m);
    const pool = new mssql.ConnectionPool(mssql.ConnectionPool.parseConnectionString(db.connectionString));
    await pool.connect();
    try {
      const request = pool.request();
      request.stream = true;
      const seen: string[] = [];
      let scanAt: number | undefined;
      const done = new Promise<void>((resolve, reject) => {
        request.on('row', (row: { start_lsn: Buffer }) => {
          seen.push(`0x${row.start_lsn.toString('hex')}`);
          if (seen.length === 1000) {
            request.pause();
            setTimeout(() => {
              scanAt = m.mappingRowsBuilt;
              m.cleanup(lsns[500]!);
              request.resume();
            }, 50);
          }
        });
        request.on('error', reject);
        request.on('done', () => resolve());
      });
      void request.query('SELECT start_lsn FROM cdc.lsn_time_mapping ORDER BY start_lsn');
      await done;
      expect(scanAt).toBeGreaterThan(1000);
      expect(scanAt).toBeLessThan(total);
      expect(m.lsnTimeMapping.length).toBe(total - 500);
      expect(seen.length).toBe(total);
      // Compared where they first differ: a diff of 300,000 entries would take minutes to print.
      const differs = seen.findIndex((lsn, i) => lsn !== lsns[i]);
      expect(differs === -1 ? 'none' : `entry ${differs}: ${seen[differs]}, expected ${lsns[differs]}`).toBe('none');
    } finally {
      await pool.close();
      await db.close();
    }
  });
});
