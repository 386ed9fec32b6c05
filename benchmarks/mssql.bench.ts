/**
 * The CDC reader's own cost: windows, the commit-order merge across tables and row -> envelope
 * conversion, over simulated driver result sets of realistic rows (what `mssql` streams for dstream's
 * select list: numbers, strings, exact decimals and dates as text, Buffers for LSNs and bytes).
 * The simulated server answers every query at once, so the source's CPU is all that is measured.
 *
 * Contenders: mssqlCdc() reading the whole backlog; the baseline reads the same simulated table
 * streams one after another with no merge, no mapping and no envelopes (the floor: what producing
 * the rows costs). Targets: >= 100k rows/s on one core (SQL Server itself streams about 100k rows/s
 * per connection in published CDC benchmarks), and RSS flat while a 1M-row backlog is read.
 */
import { Readable } from 'node:stream';
import { mssqlCdc, type CdcConnector, type CdcQueries, type CaptureInstance } from '../dist/lib/sources/mssql/index.js';
import { drainCdc, race, rssAcross, type BenchResult, type Measurement, type Target } from './harness.js';

const TABLES = [
  { schema: 'dbo', table: 'Persons', columns: ['Id:int', 'Name:nvarchar', 'Email:nvarchar', 'Balance:decimal', 'Active:bit', 'CreatedAt:datetime2', 'Country:char', 'Version:bigint'] },
  { schema: 'sales', table: 'Orders', columns: ['OrderId:bigint', 'CustomerId:int', 'Total:money', 'Status:varchar', 'PlacedAt:datetimeoffset', 'Notes:nvarchar', 'Token:varbinary'] },
  { schema: 'dbo', table: 'Customers', columns: ['CustomerId:int', 'Company:nvarchar', 'Country:char', 'Since:date', 'Score:float', 'Tags:nvarchar'] },
];
const BASE = 0x2a_0000_0000;

/** An LSN as the driver hands it over: a fresh 10-byte Buffer (from the pool, as tedious's are). */
function lsn(tx: number, seq = 0): Buffer {
  const b = Buffer.allocUnsafe(10);
  const v = BASE + tx * 16;
  b.writeUInt16BE(0, 0);
  b.writeUInt32BE(Math.floor(v / 2 ** 32), 2);
  b.writeUInt32BE((v >>> 0) + seq, 6);
  return b;
}
const txOf = (b: Buffer) => (b.readUInt32BE(2) * 2 ** 32 + b.readUInt32BE(6) - BASE) / 16;

/** Which tables transaction `tx` touched: one always, a second in every fourth. */
const touches = (tx: number, t: number) => tx % 3 === t || (tx % 4 === 0 && (tx + 1) % 3 === t);

const NAMES = ['Ada Lovelace', 'Grace Hopper', 'Edsger Dijkstra', 'Barbara Liskov', 'Ken Thompson', 'Zoë Quinn', 'Jürgen Schmidhuber'];
const TOKENS = Array.from({ length: 256 }, (_, i) => Buffer.from([i, 1, 2, 3, 4, 5, 6, 7]));
const STRINGS = Array.from({ length: 1000 }, (_, i) => ({ email: `user${i}@example.com`, money: `${i * 37}.4500`, balance: `${i * 101}.${String(i % 100).padStart(2, '0')}`, version: String(i * 7919) }));
const COMMIT_TIME = '2026-11-26T09:01:02.123';
/**
 * One driver row (a fresh array per row, as the driver makes), values in the form dstream selects
 * them, laid out for query mode direct: LSN, seqval, operation, command id, commit time, columns.
 */
function row(t: number, tx: number, seq: number): unknown[] {
  const name = NAMES[tx % NAMES.length]!;
  const v = STRINGS[tx % 1000]!;
  const op = tx % 7 === 0 ? 4 : 2;
  if (t === 0) return [lsn(tx), lsn(tx, seq), op, 1, COMMIT_TIME, tx, name, v.email, v.balance, tx % 2 === 0, '2026-11-26T09:01:02.1234567', 'NZ ', v.version];
  if (t === 1) return [lsn(tx), lsn(tx, seq), op, 1, COMMIT_TIME, v.version, tx % 5000, v.money, 'paid', '2026-11-26T09:01:02.1234567+13:00', 'leave at the door, ring twice', TOKENS[tx & 255]];
  return [lsn(tx), lsn(tx, seq), op, 1, COMMIT_TIME, tx, name, 'DE ', '2019-04-01', (tx % 1000) / 7, 'wholesale,priority'];
}

/** Rows of table `t` for transactions [from, to], produced as read (nothing is held). */
function tableStream(t: number, from: number, to: number): Readable {
  let tx = from;
  return new Readable({
    objectMode: true,
    highWaterMark: 512,
    read() {
      for (;;) {
        if (tx > to) {
          this.push(null);
          return;
        }
        const here = tx++;
        if (!touches(here, t)) continue;
        if (!this.push(row(t, here, t + 1))) return;
      }
    },
  });
}

function connector(transactions: number): CdcConnector {
  const instances: CaptureInstance[] = TABLES.map((d) => ({
    name: `${d.schema}_${d.table}`,
    schema: d.schema,
    table: d.table,
    startLsn: lsn(1),
    createDate: '2026-01-01T00:00:00',
    columns: d.columns.map((c) => ({ name: c.split(':')[0]!, type: c.split(':')[1]! })),
  }));
  const q: CdcQueries = {
    where: 'simulated:1433/bench',
    databaseInfo: async () => ({ database: 'bench', cdcEnabled: true }),
    agentState: async () => 'running',
    sourceTables: async () => TABLES.map((d) => ({ schema: d.schema, table: d.table, tracked: true })),
    captureInstances: async () => instances,
    tableColumns: async () => [],
    maxLsn: async () => lsn(transactions),
    minLsn: async () => lsn(1),
    minLsns: async (names) => names.map(() => lsn(1)),
    lsnTime: async () => null,
    windowCommits: async (from, to, limit) => {
      const first = Math.ceil(txOf(from));
      const commits = Math.max(0, Math.min(limit, Math.floor(txOf(to)) - first + 1));
      return { commits, last: commits > 0 ? lsn(first + commits - 1) : null };
    },
    countTransactions: async (after, to) => Math.max(0, Math.floor(txOf(to)) - Math.floor(txOf(after))),
    // Every table has changes in every window, fewer than a window's row limit.
    windowRows: async (_instance, _from, to) => ({ rows: 1, last: to }),
    changes: (instance, from, to) => tableStream(instances.indexOf(instances.find((i) => i.name === instance.name)!), Math.ceil(txOf(from)), Math.floor(txOf(to))),
    snapshot: () => Readable.from([]),
    enableDatabase: async () => {},
    enableTable: async () => {},
    disableTable: async () => {},
    disableDatabase: async () => {},
    marks: async () => ({ database: null, tables: new Map() }),
    checkpointTableExists: async () => false,
    createCheckpointTable: async () => {},
    dropCheckpointTable: async () => {},
    loadCheckpoints: async () => [],
    saveCheckpoints: async () => {},
    deleteCheckpoints: async () => 0,
    checkpointRowCount: async () => 0,
    tryLock: async () => true,
    holdsLock: async () => true,
    close: async () => {},
  };
  return async () => q;
}

/** Rows in a backlog of `transactions` commits. */
export const rowsIn = (transactions: number) => {
  let n = 0;
  for (let tx = 1; tx <= transactions; tx++) for (let t = 0; t < 3; t++) if (touches(tx, t)) n++;
  return n;
};

export async function readAll(transactions: number, onRow?: (n: number) => void): Promise<number> {
  const ac = new AbortController();
  const stream = mssqlCdc({ connect: connector(transactions), tables: ['Persons', 'sales.Orders', 'Customers'], start: 'earliest', signal: ac.signal, pollIntervalMs: 1 });
  return drainCdc(stream, ac, rowsIn(transactions), onRow);
}

async function baseline(transactions: number): Promise<number> {
  let rows = 0;
  for (let t = 0; t < 3; t++) for await (const _ of tableStream(t, 1, transactions)) rows++;
  return rows;
}

export async function run(transactions: number, rounds: number): Promise<BenchResult> {
  const rows = rowsIn(transactions);
  const group = `${rows.toLocaleString('en-US')} rows over 3 tables, ${transactions.toLocaleString('en-US')} commits`;
  const times = await race(
    [
      { name: 'mssqlCdc (windows, merge, envelopes)', run: async () => void (await readAll(transactions)) },
      { name: 'simulated driver rows alone', run: async () => void (await baseline(transactions)) },
    ],
    rounds,
  );
  const measurements: Measurement[] = [...times].map(([name, t]) => ({ group, name, ms: t.ms, rounds: t.rounds, lines: rows, bytes: 0 }));
  const reader = times.get('mssqlCdc (windows, merge, envelopes)')!;
  const rowsPerSecond = (rows / Math.min(...reader.rounds)) * 1000;
  measurements.push({ group, name: 'mssqlCdc rows/s (best round)', ms: 0, rounds: [], lines: 0, bytes: 0, value: rowsPerSecond });

  // RSS across a 1M-row backlog: if anything grew with the rows read, the peak of the second half
  // would stand above the peak of the first (after the first 100k rows, when the heap has sized itself).
  const backlog = Math.ceil((1_000_000 / rowsIn(12_000)) * 12_000);
  const total = rowsIn(backlog);
  const rssGroup = `backlog of ${total.toLocaleString('en-US')} rows`;
  measurements.push(...(await rssAcross(total, rssGroup, (onRow) => readAll(backlog, onRow))));
  const targets: Target[] = [
    { group, subject: 'mssqlCdc rows/s (best round)', min: 100_000, text: 'mssqlCdc >= 100k rows/s on one core (merge + envelopes)' },
    { group: rssGroup, subject: 'RSS growth, second half over first (MB)', max: 16, text: 'RSS flat across a 1M-row backlog (second-half peak < first-half peak + 16 MB)' },
  ];
  const notes = [
    `mssqlCdc at ${Math.round(rowsPerSecond).toLocaleString('en-US')} rows/s on one core, ${((Math.min(...times.get('simulated driver rows alone')!.rounds) / Math.min(...reader.rounds)) * 100).toFixed(0)}% of the rate at which the simulated rows alone are produced.`,
    'Windows of 10,000 commits (the default max_transactions); a checkpoint at the first commit boundary after every 1,000 rows.',
  ];
  return { measurements, targets, notes };
}
