/**
 * The TDS test server with a CDC backlog, in its own process, so that a benchmark measures the
 * client side (driver + dstream) only, as it would against a SQL Server on another machine:
 *   tsx benchmarks/sql-server-process.ts <rows>
 * prints {"connectionString":"...","rows":N,"maxLsn":"0x...","instances":[...]} on stdout once it
 * listens. Three tables; every transaction touches one table, every fourth a second one.
 */
import { CdcModel } from '../test/support/cdc-model.js';
import { startSqlServer } from '../test/support/sql-server.js';

export const TABLES = [
  { name: 'dbo.Persons', columns: ['Id:int', 'Name:nvarchar', 'Email:nvarchar', 'Balance:decimal', 'Active:bit', 'Version:bigint'], key: 'Id' },
  { name: 'sales.Orders', columns: ['OrderId:bigint', 'CustomerId:int', 'Total:money', 'Status:varchar', 'Notes:nvarchar', 'Token:varbinary'], key: 'OrderId' },
  { name: 'dbo.Customers', columns: ['CustomerId:int', 'Company:nvarchar', 'Country:varchar', 'Score:float', 'Tags:nvarchar'], key: 'CustomerId' },
];

const NAMES = ['Ada Lovelace', 'Grace Hopper', 'Edsger Dijkstra', 'Barbara Liskov', 'Ken Thompson', 'Zoë Quinn', 'Jürgen Schmidhuber'];
const touches = (tx: number, t: number) => tx % 3 === t || (tx % 4 === 0 && (tx + 1) % 3 === t);

function row(t: number, tx: number): Record<string, unknown> {
  const name = NAMES[tx % NAMES.length]!;
  if (t === 0) return { Id: tx, Name: name, Email: `user${tx % 1000}@example.com`, Balance: `${(tx % 1000) * 101}.${String(tx % 100).padStart(2, '0')}`, Active: tx % 2 === 0, Version: String(tx * 7919) };
  if (t === 1) return { OrderId: String(tx), CustomerId: tx % 5000, Total: `${(tx % 1000) * 37}.4500`, Status: 'paid', Notes: 'leave at the door, ring twice', Token: Buffer.from([tx & 255, 1, 2, 3, 4, 5, 6, 7]) };
  return { CustomerId: tx, Company: name, Country: 'DE', Score: (tx % 1000) / 7, Tags: 'wholesale,priority' };
}

export function backlog(rows: number): CdcModel {
  const m = new CdcModel();
  m.database = 'bench';
  for (const t of TABLES) {
    m.createTable(t.name, t.columns.map((c) => ({ name: c.split(':')[0]!, type: c.split(':')[1]!, nullable: c.split(':')[0] !== t.key })), [t.key]);
    m.enableTable(t.name);
  }
  let n = 0;
  for (let tx = 1; n < rows; tx++) {
    const changes = [];
    for (let t = 0; t < 3 && n < rows; t++) {
      if (!touches(tx, t)) continue;
      changes.push({ table: TABLES[t]!.name, op: 'insert' as const, row: row(t, tx) });
      n++;
    }
    if (changes.length > 0) m.commit(changes);
  }
  return m;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const rows = Number(process.argv[2] ?? 200_000);
  const model = backlog(rows);
  const db = await startSqlServer(model);
  process.stdout.write(`${JSON.stringify({ connectionString: db.connectionString, rows, maxLsn: model.currentMaxLsn, instances: model.instances.map((i) => ({ name: i.name, startLsn: `0x${i.startLsn.toString('hex')}` })) })}\n`);
  process.on('SIGTERM', () => void db.close().then(() => process.exit(0)));
}
