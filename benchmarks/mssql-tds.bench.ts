/**
 * The CDC reader through the real driver: mssqlCdc() with a connection string, over TCP, against the
 * TDS test server (in its own process, with a CDC backlog of three tables). Beside it, in the same
 * run against the same server, tedious alone streams the same change rows with plain SELECTs from
 * cdc.fn_cdc_get_all_changes_<instance> (no windows, no merge, no envelopes): the floor set by the
 * driver's row decoding. Target: the reader >= 0.5x tedious alone. Then the reader reads a backlog of
 * 1M rows and its process's RSS is sampled: the second half's peak must stay below the first's + 16 MB.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Connection, Request, TYPES } from 'tedious';
import { mssqlCdc } from '../dist/lib/index.js';
import { drainCdc, race, rssAcross, type BenchResult, type Measurement, type Target } from './harness.js';

const TSX = fileURLToPath(new URL('./node_modules/tsx/dist/cli.mjs', import.meta.url));
const SERVER = fileURLToPath(new URL('./sql-server-process.ts', import.meta.url));
const TABLES = ['Persons', 'sales.Orders', 'Customers'];

interface Served {
  child: ChildProcess;
  connectionString: string;
  rows: number;
  maxLsn: string;
  instances: Array<{ name: string; startLsn: string }>;
}

async function serve(rows: number): Promise<Served> {
  const child = spawn(process.execPath, [TSX, SERVER, String(rows)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`sql-server-process exited with ${code}`)));
  });
  return { child, ...(JSON.parse(line) as Omit<Served, 'child'>) };
}

async function stop(s: Served): Promise<void> {
  const gone = new Promise((r) => s.child.once('exit', r));
  s.child.kill('SIGTERM');
  await gone;
}

/** mssqlCdc from the earliest change until `rows` rows have come. */
function readAll(connectionString: string, rows: number, onRow?: (n: number) => void): Promise<number> {
  const ac = new AbortController();
  const stream = mssqlCdc({ connectionString, tables: TABLES, start: 'earliest', signal: ac.signal, pollIntervalMs: 1, log: () => undefined });
  return drainCdc(stream, ac, rows, onRow);
}

/** tedious alone: one connection, the change rows of each instance with a plain SELECT, counted. */
async function tediousAlone(s: Served): Promise<number> {
  const keys = new Map<string, string>();
  for (const part of s.connectionString.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) keys.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
  }
  const [host, port] = keys.get('server')!.split(',');
  const connection = new Connection({
    server: host!,
    authentication: { type: 'default', options: { userName: keys.get('user id')!, password: keys.get('password')! } },
    options: { port: Number(port), database: keys.get('database')!, encrypt: false, trustServerCertificate: true },
  });
  await new Promise<void>((resolve, reject) => connection.connect((err) => (err ? reject(err) : resolve())));
  let rows = 0;
  try {
    for (const i of s.instances) {
      await new Promise<void>((resolve, reject) => {
        const req = new Request(`SELECT * FROM cdc.[fn_cdc_get_all_changes_${i.name}](@from, @to, N'all')`, (err) => (err ? reject(err) : resolve()));
        req.addParameter('from', TYPES.VarBinary, Buffer.from(i.startLsn.slice(2), 'hex'), { length: 10 });
        req.addParameter('to', TYPES.VarBinary, Buffer.from(s.maxLsn.slice(2), 'hex'), { length: 10 });
        req.on('row', () => rows++);
        connection.execSql(req);
      });
    }
  } finally {
    connection.close();
  }
  return rows;
}

export async function run(rows: number, rounds: number, backlogRows = 1_000_000): Promise<BenchResult> {
  const group = `${rows.toLocaleString('en-US')} rows over 3 tables, over TCP from the TDS test server`;
  const measurements: Measurement[] = [];
  const s = await serve(rows);
  let times;
  try {
    times = await race(
      [
        { name: 'mssqlCdc through mssql/tedious', run: async () => void (await readAll(s.connectionString, rows)) },
        { name: 'tedious alone (plain SELECT per table)', run: async () => void (await tediousAlone(s)) },
      ],
      rounds,
    );
  } finally {
    await stop(s);
  }
  for (const [name, t] of times) measurements.push({ group, name, ms: t.ms, rounds: t.rounds, lines: rows, bytes: 0 });
  const reader = Math.min(...times.get('mssqlCdc through mssql/tedious')!.rounds);
  const alone = Math.min(...times.get('tedious alone (plain SELECT per table)')!.rounds);
  measurements.push({ group, name: 'mssqlCdc rows/s (best round)', ms: 0, rounds: [], lines: 0, bytes: 0, value: (rows / reader) * 1000 });
  measurements.push({ group, name: 'tedious alone rows/s (best round)', ms: 0, rounds: [], lines: 0, bytes: 0, value: (rows / alone) * 1000 });
  measurements.push({ group, name: 'mssqlCdc / tedious alone', ms: 0, rounds: [], lines: 0, bytes: 0, value: alone / reader });

  // RSS across a 1M-row backlog, sampled in this (the reader's) process after the first 100k rows.
  const big = await serve(backlogRows);
  const rssGroup = `backlog of ${big.rows.toLocaleString('en-US')} rows over TCP`;
  try {
    measurements.push(...(await rssAcross(big.rows, rssGroup, (onRow) => readAll(big.connectionString, big.rows, onRow))));
  } finally {
    await stop(big);
  }
  const targets: Target[] = [
    { group, subject: 'mssqlCdc / tedious alone', min: 0.5, text: 'mssqlCdc through the driver >= 0.5x tedious alone streaming the same rows' },
    { group: rssGroup, subject: 'RSS growth, second half over first (MB)', max: 16, text: 'RSS flat across a 1M-row backlog read through the driver (second-half peak < first-half peak + 16 MB)' },
  ];
  const notes = [
    `mssqlCdc at ${Math.round((rows / reader) * 1000).toLocaleString('en-US')} rows/s, tedious alone at ${Math.round((rows / alone) * 1000).toLocaleString('en-US')} rows/s: ${((alone / reader) * 100).toFixed(0)}%.`,
    'The server runs in its own process (the CDC model behind its T-SQL front and the TDS wire); both contenders share its cost. The reader also counts each window\'s commits in cdc.lsn_time_mapping and selects each change row\'s commit time from it (a lookup per row in the test server).',
  ];
  return { measurements, targets, notes };
}
