/**
 * The source side of the latency benchmark, in its own process: the TDS test server over an empty
 * CDC model of three tables whose commit times come from the machine's clock.
 *   tsx benchmarks/latency-source.ts
 * prints {"connectionString":"..."} once it listens; then each stdin line {"rate":R,"seconds":S}
 * commits R rows/s (transactions of 2 rows, spread over the tables, every 10 ms) for S seconds and
 * answers {"rows":N,"lagMs":L,"startedAt":T} (L: how far the committer fell behind its schedule at
 * worst; T: the clock when it started, row k being due at T + k / R s).
 */
import { createInterface } from 'node:readline';
import { CdcModel } from '../test/support/cdc-model.js';
import { startSqlServer } from '../test/support/sql-server.js';

const TABLES = ['dbo.Persons', 'sales.Orders', 'dbo.Customers'];
const model = new CdcModel();
model.database = 'bench';
model.wallClock = true;
model.createTable('dbo.Persons', [{ name: 'Id', type: 'int', nullable: false }, { name: 'Name', type: 'nvarchar' }, { name: 'Email', type: 'nvarchar' }], ['Id']);
model.createTable('sales.Orders', [{ name: 'OrderId', type: 'bigint', nullable: false }, { name: 'CustomerId', type: 'int' }, { name: 'Total', type: 'money' }], ['OrderId']);
model.createTable('dbo.Customers', [{ name: 'CustomerId', type: 'int', nullable: false }, { name: 'Company', type: 'nvarchar' }], ['CustomerId']);
for (const t of TABLES) model.enableTable(t);
const db = await startSqlServer(model);
process.stdout.write(`${JSON.stringify({ connectionString: db.connectionString })}\n`);

let id = 0;
function row(t: number): { table: string; op: 'insert'; row: Record<string, unknown> } {
  id++;
  if (t === 0) return { table: TABLES[0]!, op: 'insert', row: { Id: id, Name: `person ${id}`, Email: `p${id}@example.com` } };
  if (t === 1) return { table: TABLES[1]!, op: 'insert', row: { OrderId: String(id), CustomerId: id % 5000, Total: `${id % 1000}.4500` } };
  return { table: TABLES[2]!, op: 'insert', row: { CustomerId: id, Company: `company ${id}` } };
}

async function steady(rate: number, seconds: number): Promise<{ rows: number; lagMs: number; startedAt: number }> {
  const started = Date.now();
  const total = Math.round(rate * seconds);
  let rows = 0;
  let lagMs = 0;
  while (rows < total) {
    const due = Math.min(total, Math.floor(((Date.now() - started) / 1000) * rate));
    lagMs = Math.max(lagMs, ((due - rows) / rate) * 1000);
    while (rows < due) {
      const n = Math.min(2, due - rows);
      model.commit(Array.from({ length: n }, (_, i) => row((rows + i) % 3)));
      rows += n;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return { rows, lagMs, startedAt: started };
}

for await (const line of createInterface({ input: process.stdin })) {
  const { rate, seconds } = JSON.parse(line) as { rate: number; seconds: number };
  process.stdout.write(`${JSON.stringify(await steady(rate, seconds))}\n`);
}
await db.close();
