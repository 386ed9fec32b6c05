/**
 * SQL Server CDC behaviours the reader must survive: capture lag, NULL start_lsn, cleanup pruning
 * history, deferred updates, first rows slower than a request timeout, a lease connection that
 * dies, LOB columns CDC does not give, and what `status` says about retention. Each model runs
 * behind its own TDS test server; dstream reaches it through the real driver.
 */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { Envelope } from '../../lib/envelope/types.js';
import { ErrorCodes, ExitCodes } from '../../lib/index.js';
import { runProvider } from '../../lib/provider/run-provider.js';
import { SqlCheckpointStore } from '../../lib/state/sql-store.js';
import { leaseResource } from '../../lib/sources/mssql/lease.js';
import { incrementLsn, lsnToHex } from '../../lib/sources/mssql/lsn.js';
import { mssqlCdcProvider } from '../../lib/providers/mssql-cdc.js';
import { mssqlCdc, type MssqlCdcOptions, type MssqlCdcPosition } from '../../lib/sources/mssql/reader.js';
import { sqlServerConnector } from '../../lib/sources/mssql/sqlserver.js';
import { CdcModel, shopModel } from '../support/cdc-model.js';
import { sqlServerForTest, type TestSqlServer } from '../support/sql-server.js';
import { readUntil as readStream, text, until } from '../support/streams.js';

type Opts = Partial<MssqlCdcOptions>;
const FAST: Opts = { pollIntervalMs: 2, maxPollIntervalMs: 5, retryDelayMs: 1, heartbeatMs: 60_000 };

const servers = new WeakMap<CdcModel, TestSqlServer>();
/** `m` behind its own TDS test server for this test. */
async function serve<M extends CdcModel>(m: M): Promise<M> {
  servers.set(m, await sqlServerForTest(m));
  return m;
}
const connector = (m: CdcModel) => sqlServerConnector(servers.get(m)!.connectionString);

function reader(m: CdcModel, opts: Opts = {}, logs: string[] = []) {
  const stream = mssqlCdc({ connectionString: servers.get(m)!.connectionString, tables: ['Persons'], start: 'earliest', ...FAST, log: (l) => logs.push(l), ...opts });
  return { stream, logs };
}

const readUntil = (stream: ReturnType<typeof mssqlCdc>, done: (seen: Envelope[]) => boolean, ms?: number) => readStream<Envelope>(stream, done, ms);
const rowsOf = (es: Envelope[]) => es.filter((e) => e.type === 'cdc');
const idsOf = (es: Envelope[]) => rowsOf(es).map((e) => (e.data as { Id: number }).Id);
const positionOf = (e: Envelope) => (e.data as { position: MssqlCdcPosition }).position;
const rowCount = (n: number) => (es: Envelope[]) => rowsOf(es).length >= n && es.at(-1)!.type === 'checkpoint';
/**
 * From the second statement naming dbo.Persons' change table on (a window counts its rows, then
 * reads them), every cleanup check (sys.fn_cdc_get_min_lsn) waits until letGo().
 */
function stallCleanupChecks(m: CdcModel): { letGo: () => void; stalled: () => number } {
  let letGo!: () => void;
  const stall = new Promise<void>((resolve) => (letGo = resolve));
  let named = 0;
  let stalled = 0;
  m.beforeStatement = (name) => {
    if (name === 'cdc.dbo_Persons_CT') named++;
    if (name !== 'sys.fn_cdc_get_min_lsn' || named < 2) return;
    stalled++;
    return stall;
  };
  return { letGo, stalled: () => stalled };
}

/**
 * Reads on until the reader has gone back (a row whose Id is below the one before it) and is then
 * through row `lastId` at a checkpoint; returns the index in `seen` of the first row read again.
 */
async function readBackThrough(it: AsyncIterator<unknown>, seen: Envelope[], lastId: number): Promise<number> {
  let back = -1;
  for (let last = idsOf(seen).at(-1) ?? 0; back < 0 || last !== lastId || seen.at(-1)!.type !== 'checkpoint'; ) {
    const e = (await it.next()).value as Envelope;
    seen.push(e);
    if (e.type !== 'cdc') continue;
    const id = (e.data as { Id: number }).Id;
    if (back < 0 && id < last) back = seen.length - 1;
    last = id;
  }
  return back;
}

/** The provider in-process over the model, standalone (argv), until `stopWhen` holds for its stdout lines. */
async function provider(m: CdcModel, argv: string[], stopWhen: (lines: Envelope[]) => boolean = () => false) {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const stderr = text();
  const signals = new PassThrough() as unknown as NodeJS.EventEmitter;
  const lines: Envelope[] = [];
  let buffered = '';
  stdout.setEncoding('utf8').on('data', (d: string) => {
    buffered += d;
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      lines.push(JSON.parse(buffered.slice(0, nl)) as Envelope);
      buffered = buffered.slice(nl + 1);
      if (stopWhen(lines)) signals.emit('SIGTERM', 'SIGTERM');
    }
  });
  const code = await runProvider(mssqlCdcProvider(), { argv, stdin, stdout, stderr, env: { MSSQL_CONNECTION_STRING: servers.get(m)!.connectionString }, signals });
  return { code, lines, stderr: stderr.text() };
}

function persons(m: CdcModel, from: number, n: number): void {
  for (let i = from; i < from + n; i++) m.commit([{ table: 'Persons', op: 'insert', row: { Id: i, Name: `p${i}` } }]);
}

/** Persons not yet tracked; Customers tracked and busy, so the database has a max LSN. */
async function laggingShop(): Promise<CdcModel> {
  const m = new CdcModel();
  m.createTable('dbo.Persons', [{ name: 'Id', type: 'int', nullable: false }, { name: 'Name', type: 'nvarchar' }], ['Id']);
  m.createTable('dbo.Customers', [{ name: 'CustomerId', type: 'int', nullable: false }], ['CustomerId']);
  m.enableTable('dbo.Customers');
  m.commit([{ table: 'Customers', op: 'insert', row: { CustomerId: 1 } }]);
  m.captureLag = true;
  // Logged, not yet captured: the log is ahead of max LSN when Persons is enabled.
  m.commit([{ table: 'Customers', op: 'insert', row: { CustomerId: 2 } }]);
  return serve(m);
}

describe('capture lag: max LSN behind a new capture instance', () => {
  it('init with enable_cdc, then run: every change once, no gap, and a restart from the first position raises none either', async () => {
    const m = await laggingShop();
    const init = await provider(m, ['init', '--tables', 'Persons', '--enable-cdc', '--task', 'shop']);
    expect(init.code).toBe(ExitCodes.OK);
    persons(m, 1, 3); // logged; the capture job has not run yet
    expect(m.currentMaxLsn! < lsnToHex(m.instance('dbo_Persons')!.startLsn!)).toBe(true);
    const args = ['--tables', 'Persons', '--poll-interval-ms', '2', '--max-poll-interval-ms', '5', '--progress-ms', '0'];
    const run = await provider(m, args, (lines) => {
      // The capture job runs on its own schedule: once the reader has stored where it starts.
      if (lines.length === 1) m.runCapture();
      return rowsOf(lines).length >= 3 && lines.at(-1)!.type === 'checkpoint';
    });
    expect(run.stderr).not.toMatch(/DSTREAM_ERR_CDC_GAP|cleanup has removed/);
    expect(run.code).toBe(ExitCodes.TERMINATED);
    expect(idsOf(run.lines)).toEqual([1, 2, 3]);
    // The first position stored lies below the instance's start: resuming from it is no gap.
    const first = positionOf(run.lines[0]!);
    const again = await readUntil(reader(m, { after: first, start: 'latest' }).stream, rowCount(3));
    expect(idsOf(again)).toEqual([1, 2, 3]);
  });

  it('a capture instance whose start_lsn is still NULL is waited for, not a TypeError', async () => {
    const m = await laggingShop();
    m.nullStartLsn = true;
    m.enableTable('dbo.Persons');
    persons(m, 1, 2);
    expect(m.instance('dbo_Persons')!.startLsn).toBeNull();
    const logs: string[] = [];
    const { stream } = reader(m, { tables: ['Persons', 'Customers'] }, logs);
    const it = stream[Symbol.asyncIterator]();
    const seen: Envelope[] = [];
    const first = it.next();
    await until(() => logs.some((l) => /dbo\.Persons: its capture instance has no start LSN yet/.test(l)));
    m.runCapture();
    seen.push((await first).value as Envelope);
    const personRows = () => rowsOf(seen).filter((r) => r.metadata!.TableName === 'Persons');
    while (personRows().length < 2) seen.push((await it.next()).value as Envelope);
    await it.return?.();
    expect(idsOf(personRows())).toEqual([1, 2]);
  });

  it('a quiet database whose cleanup pruned all of cdc.lsn_time_mapping (max LSN NULL again) still starts, and streams what comes next', async () => {
    const m = await serve(shopModel());
    persons(m, 1, 2);
    m.cleanup(lsnToHex(incrementLsn(Buffer.from(m.currentMaxLsn!.slice(2), 'hex'))));
    expect(m.currentMaxLsn).toBeNull();
    const { stream } = reader(m);
    const it = stream[Symbol.asyncIterator]();
    const next = it.next();
    persons(m, 3, 1);
    const seen = [(await next).value as Envelope];
    while (rowsOf(seen).length < 1) seen.push((await it.next()).value as Envelope);
    await it.return?.();
    expect(idsOf(seen)).toEqual([3]);
  });
});

describe('order inside a transaction', () => {
  function keyShift(m: CdcModel) {
    persons(m, 1, 2);
    // UPDATE Persons SET Id = Id + 1: a deferred update, deletes then inserts, one seqval per row.
    m.updateKeys('Persons', [
      { key: { Id: 1 }, set: { Id: 2 } },
      { key: { Id: 2 }, set: { Id: 3 } },
    ]);
  }

  it('a key-changing update arrives as delete then insert, in the order the operations happened (query mode direct, the default)', async () => {
    const m = await serve(shopModel());
    keyShift(m);
    const rows = rowsOf(await readUntil(reader(m).stream, rowCount(6)));
    expect(rows.slice(2).map((r) => `${r.metadata!.OperationType}:${(r.data as { Id: number }).Id}`)).toEqual(['Delete:1', 'Delete:2', 'Insert:2', 'Insert:3']);
    // Applied in order, the rows end as the table is: 2 and 3.
    const table = new Map<number, unknown>();
    for (const r of rows) {
      const id = (r.data as { Id: number }).Id;
      if (r.metadata!.OperationType === 'Delete') table.delete(id);
      else table.set(id, r.data);
    }
    expect([...table.keys()].sort()).toEqual([2, 3]);
  });

  it('query mode function reads the change function, which orders by seqval only (docs say when that matters)', async () => {
    const m = await serve(shopModel());
    keyShift(m);
    const rows = rowsOf(await readUntil(reader(m, { queryMode: 'function' }).stream, rowCount(6)));
    expect(rows.slice(2).map((r) => r.metadata!.OperationType)).toEqual(['Delete', 'Insert', 'Delete', 'Insert']);
    expect(() => mssqlCdc({ connectionString: 'Server=127.0.0.1,1', tables: ['Persons'], queryMode: 'table' as never })).toThrow(/query_mode must be direct or function/);
  });

  it('a check that answers at once keeps every checkpoint in a large window, each in its place', async () => {
    const m = await serve(shopModel());
    persons(m, 1, 5000);
    // The change function checks its own range: nothing is asked before a checkpoint goes on.
    const seen = await readUntil(reader(m, { queryMode: 'function', checkpointEveryRows: 100 }).stream, rowCount(5000));
    let rows = 0;
    for (const e of seen) {
      if (e.type === 'cdc') rows++;
      // Every 100th row, and only there (one row per commit).
      else expect(rows % 100).toBe(0);
    }
    expect(seen.filter((e) => e.type === 'checkpoint')).toHaveLength(50);
  });

  it('query mode direct still reports a gap when cleanup removes rows while they are read (the function would fail with 313)', async () => {
    const m = await serve(shopModel());
    persons(m, 1, 2);
    const first = reader(m).stream;
    const position = positionOf((await readUntil(first, rowCount(2))).at(-1)!);
    // The first reader polls again right after its window: its statements must be over before the
    // hook below counts the second reader's.
    if (!first.closed) await new Promise((resolve) => first.once('close', resolve));
    persons(m, 3, 2);
    const kept = m.commit([{ table: 'Persons', op: 'insert', row: { Id: 5 } }]);
    // The change table is named twice per window: counted (windowRows), then read.
    let named = 0;
    m.beforeStatement = (name) => {
      if (name !== 'cdc.dbo_Persons_CT' || ++named < 2) return;
      m.beforeStatement = undefined;
      m.cleanup(kept);
    };
    const logs: string[] = [];
    const err = await readUntil(reader(m, { after: position }, logs).stream, () => false).catch((e: unknown) => e);
    expect(logs.join('\n')).toMatch(/the retained LSN range moved while reading .*dbo_Persons/);
    expect(err).toMatchObject({ code: ErrorCodes.CDC_GAP });
  });

  it('rows flow while a checkpoint is checked, the checkpoint only once its check answers: cleanup raised meanwhile means no checkpoint, and the rows read again', async () => {
    const m = await serve(shopModel());
    const lsns: string[] = [];
    for (let i = 1; i <= 3000; i++) lsns.push(m.commit([{ table: 'Persons', op: 'insert', row: { Id: i, Name: `p${i}` } }]));
    // From the window's read of the change table on (counted first, then read), every cleanup
    // check (sys.fn_cdc_get_min_lsn) waits until the test lets it go.
    const { letGo, stalled } = stallCleanupChecks(m);
    const seen: Envelope[] = [];
    const logs: string[] = [];
    const stream = mssqlCdc({ connectionString: servers.get(m)!.connectionString, tables: ['Persons'], start: 'earliest', ...FAST, checkpointEveryRows: 100, log: (l) => logs.push(l) });
    const it = stream[Symbol.asyncIterator]();
    // The first checkpoint (after 100 rows) is being checked, and the check does not answer: the
    // rows before it go on, and so do those after it, once more are waiting than the reader holds.
    while (rowsOf(seen).length < 1500) seen.push((await it.next()).value as Envelope);
    await until(() => stalled() > 0);
    expect(seen.filter((e) => e.type === 'checkpoint')).toEqual([]);
    // Cleanup raises the start past where the window was read from, then the checks answer.
    m.cleanup(lsns[49]!);
    letGo();
    // Read until the reader, having gone back (to row 50, where cleanup left the table), is through.
    const back = await readBackThrough(it, seen, 3000);
    await it.return?.();
    expect(logs.join('\n')).toMatch(/the retained LSN range moved while reading .*dbo_Persons/);
    // No checkpoint before the reader went back: it had none proven.
    expect(back).toBeGreaterThanOrEqual(1500);
    expect(seen.slice(0, back).filter((e) => e.type === 'checkpoint')).toEqual([]);
    // Read again from where cleanup left the table: nothing lost, every checkpoint at or past it.
    const again = idsOf(seen.slice(back));
    expect(again).toEqual(Array.from({ length: 2951 }, (_, i) => i + 50));
    for (const cp of seen.filter((e) => e.type === 'checkpoint')) expect(positionOf(cp).tables['dbo.Persons']! >= lsns[49]!).toBe(true);
  });
});

describe('windows and the request timeout', () => {
  it('a window whose sort would outlast the driver\'s default 15 s timeout completes: the change table is read in its own order', { timeout: 60_000 }, async () => {
    const m = await serve(shopModel());
    for (let i = 1; i <= 10_000; i++) m.commit([{ table: 'Persons', op: 'insert', row: { Id: i } }]);
    m.sortMsPerRow = 2; // 20 s before the first row of the change function
    const ids = idsOf(await readUntil(reader(m).stream, rowCount(10_000), 50_000));
    expect(ids).toHaveLength(10_000);
    expect(new Set(ids).size).toBe(10_000);
  });

  it('query mode function: a first row later than request_timeout_ms narrows the window until it comes, and gives up at one commit', { timeout: 60_000 }, async () => {
    const m = await serve(shopModel());
    for (let i = 1; i <= 1000; i++) m.commit([{ table: 'Persons', op: 'insert', row: { Id: i } }]);
    m.sortMsPerRow = 0.3; // 300 ms for the whole backlog, 47 ms for 156 rows
    const logs: string[] = [];
    const ids = idsOf(await readUntil(reader(m, { queryMode: 'function', requestTimeoutMs: 150 }, logs).stream, rowCount(1000), 40_000));
    expect(ids).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
    expect(logs.join('\n')).toMatch(/dbo\.Persons: the first row of a window of up to 10000 rows did not come within the request timeout \(Timeout: Request failed to complete in 150ms\); reading windows of up to 2500 rows/);
    // One commit too big to sort in time: an error naming the setting, not retries forever.
    const big = await serve(shopModel());
    big.commit(Array.from({ length: 500 }, (_, i) => ({ table: 'Persons', op: 'insert' as const, row: { Id: i } })));
    big.sortMsPerRow = 1;
    const err = await readUntil(reader(big, { queryMode: 'function', requestTimeoutMs: 50 }).stream, () => false, 15_000).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCodes.SQL_TIMEOUT, message: expect.stringMatching(/dbo\.Persons: .*the request timeout \(Timeout: Request failed to complete in 50ms\), even for a window of one commit; raise request_timeout_ms .*query_mode = "direct"/) });
  });

  it('bounds a window by rows as well as commits, ending it at a commit boundary', async () => {
    const m = await serve(shopModel());
    for (let i = 1; i <= 40; i++) m.commit([{ table: 'Persons', op: 'insert', row: { Id: 2 * i - 1 } }, { table: 'Persons', op: 'insert', row: { Id: 2 * i } }]);
    const seen = await readUntil(reader(m, { maxRows: 9, checkpointEveryRows: 1000 }).stream, rowCount(80));
    expect(idsOf(seen)).toEqual(Array.from({ length: 80 }, (_, i) => i + 1));
    // One checkpoint per window, each after a whole commit: 9 rows end inside the 5th commit, so 10 rows a window.
    const between = seen.reduce<number[]>((acc, e) => (e.type === 'checkpoint' ? [...acc, 0] : (acc[acc.length - 1]!++, acc)), [0]);
    expect(between.filter((n) => n > 0).every((n) => n === 10)).toBe(true);
  });

  it('sizes the pool for two streams per table while every table switches capture instance', async () => {
    const m = await serve(shopModel());
    const all = (n: number) =>
      m.commit([
        { table: 'Persons', op: 'insert', row: { Id: n } },
        { table: 'sales.Orders', op: 'insert', row: { OrderId: String(n) } },
        { table: 'Customers', op: 'insert', row: { CustomerId: n } },
      ]);
    all(1);
    for (const t of ['dbo.Persons', 'sales.Orders', 'dbo.Customers']) m.enableTable(t, `${t.replace('.', '_')}_v2`);
    all(2);
    // One window: each table reads its old instance up to the new one's start, and the new one on.
    const rows = rowsOf(await readUntil(reader(m, { tables: ['Persons', 'sales.Orders', 'Customers'], maxConnections: 2 }).stream, rowCount(6)));
    expect(rows.map((r) => r.metadata!.CaptureInstance)).toEqual(['dbo_Persons', 'sales_Orders', 'dbo_Customers', 'dbo_Persons_v2', 'sales_Orders_v2', 'dbo_Customers_v2']);

  });
});

describe('a snapshot checkpointed per chunk', () => {
  it('the provider stopped in the middle of a snapshot resumes after the last key its state file holds (snapshot_chunk_rows)', async () => {
    const m = await serve(shopModel());
    persons(m, 1, 300);
    const reads = (lines: Envelope[]) => rowsOf(lines).filter((e) => e.metadata!.OperationType === 'Read');
    const args = ['--tables', 'Persons', '--start', 'latest', '--snapshot', '--snapshot-chunk-rows', '10', '--poll-interval-ms', '2', '--progress-ms', '0'];
    // SIGTERM once: a second one exits without draining.
    const once = (cond: (lines: Envelope[]) => boolean) => {
      let sent = false;
      return (lines: Envelope[]) => !sent && (sent = cond(lines));
    };
    const first = await provider(m, args, once((lines) => reads(lines).length >= 25));
    expect(first.code, first.stderr).toBe(ExitCodes.TERMINATED);
    // What was in flight is drained: the last checkpoint lies somewhere inside the snapshot.
    const stored = positionOf(first.lines.filter((e) => e.type === 'checkpoint').at(-1)!);
    const last = stored.snapshots!['dbo.Persons']!;
    expect(last.rows % 10).toBe(0);
    expect(last.key).toEqual([last.rows]);
    expect(last.rows).toBeLessThan(300);
    const fs = await import('node:fs/promises');
    const dir = await fs.mkdtemp(`${process.env.TMPDIR ?? '/tmp'}/dstream-snapshot-`);
    await fs.writeFile(`${dir}/state.json`, JSON.stringify({ position: stored }));
    const done = (lines: Envelope[]) => lines.some((e) => e.type === 'checkpoint' && positionOf(e).tables['dbo.Persons'] !== undefined);
    const second = await provider(m, [...args, '--state-file', `${dir}/state.json`], once(done));
    expect(second.code, second.stderr).toBe(ExitCodes.TERMINATED);
    const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
    expect(idsOf(reads(second.lines))).toEqual(range(last.rows + 1, 300));
    // SIGTERM drains to a checkpoint: together the two runs read every row once (a crash would
    // repeat the rows after the stored key, with the same LSN and Seq: mssql-reader.test.ts).
    expect([...idsOf(reads(first.lines)), ...idsOf(reads(second.lines))]).toEqual(range(1, 300));
    expect(new Set(reads(second.lines).map((e) => e.metadata!.LSN))).toEqual(new Set([last.lsn]));
  });
});

describe('stopping early', () => {
  it('a reader stopped mid-window cancels its read (ATTENTION): the server stops it and the connection is free', async () => {
    const m = await serve(shopModel());
    const wide = 'x'.repeat(2000);
    for (let i = 1; i <= 3000; i++) m.commit([{ table: 'Persons', op: 'insert', row: { Id: i, Name: wide } }]);
    const { stream } = reader(m);
    const seen = await readUntil(stream, (s) => rowsOf(s).length >= 10);
    expect(rowsOf(seen)).toHaveLength(10);
    // readUntil destroyed the stream: the read still holding rows on the server is cancelled.
    await until(() => (m.calls.get('attention') ?? 0) >= 1);
    await until(() => m.openStreams === 0);
  });
});

describe('leases', () => {
  it('a worker whose lock connection dies delivers no row after the takeover: the other worker reads from the stored position', async () => {
    const m = await serve(shopModel());
    const cp = { schema: 'dstream', table: 'checkpoints' };
    const admin = await connector(m)();
    await admin.createCheckpointTable(cp);
    await admin.close();
    const store = new SqlCheckpointStore(connector(m), 'dstream.checkpoints');
    persons(m, 1, 2000);
    const lease = { task: 'shop', checkpointTable: cp, checkEveryMs: 1 };
    const aLogs: string[] = [];
    const a = reader(m, { lease, checkpointEveryRows: 50 }, aLogs);
    // A takes the lease and delivers; what it hands on is stored, as an executor would.
    const it = a.stream[Symbol.asyncIterator]();
    const aBefore: Envelope[] = [];
    while (rowsOf(aBefore).length < 120 || aBefore.at(-1)!.type !== 'checkpoint') {
      const e = (await it.next()).value as Envelope;
      aBefore.push(e);
      if (e.type === 'checkpoint') await store.save('shop', positionOf(e), 'mssql-cdc');
    }
    // A's lease connection dies; its pool would open a new one without a word.
    m.killSession(m.lockOwner(leaseResource('shop', { schema: 'dbo', table: 'Persons' }))!);
    const producedBeforeKill = a.stream.readableLength;
    const takeover = (await store.load('shop'))!.position as MssqlCdcPosition;
    const b = reader(m, { lease, checkpointEveryRows: 50 });
    const bit = b.stream[Symbol.asyncIterator]();
    const bSeen: Envelope[] = [];
    while (!idsOf(bSeen).includes(2000) || bSeen.at(-1)!.type !== 'checkpoint') bSeen.push((await bit.next()).value as Envelope);
    const bRows = rowsOf(bSeen);
    // B still holds the lease. Whatever A delivers now was produced before its lease went.
    const aAfter: Envelope[] = [];
    let stop = false;
    const pulling = (async () => {
      while (!stop) {
        const n = await it.next();
        if (n.done) return;
        aAfter.push(n.value as Envelope);
      }
    })();
    await until(() => aLogs.some((l) => /lease session ended|lease on dbo\.Persons lost/.test(l)));
    stop = true;
    a.stream.destroy();
    await pulling.catch(() => undefined);
    await bit.return?.();
    expect(rowsOf(aAfter).length + aAfter.filter((e) => e.type === 'checkpoint').length).toBeLessThanOrEqual(producedBeforeKill);
    // B starts right after the stored position.
    const stored = idsOf(aBefore.filter((e) => e.type === 'cdc' && e.metadata!.LSN === takeover.tables['dbo.Persons']));
    expect(idsOf(bRows)[0]).toBe(stored[0]! + 1);
    // Every row at least once; twice only between the takeover position and what A had produced.
    const delivered = [...idsOf(aBefore), ...idsOf(aAfter), ...idsOf(bRows)];
    expect(new Set(delivered).size).toBe(2000);
    expect(aLogs.join('\n')).toMatch(/the lease session ended .*taking leases again/);
    await store.close();
  });

  it('a lease lost while a checkpoint is checked: that checkpoint is never handed on, even once its check answers', async () => {
    const m = await serve(shopModel());
    const cp = { schema: 'dstream', table: 'checkpoints' };
    const admin = await connector(m)();
    await admin.createCheckpointTable(cp);
    await admin.close();
    persons(m, 1, 600);
    // The window's checks wait (their cleanup half, sys.fn_cdc_get_min_lsn) until the test lets them go.
    const { letGo, stalled } = stallCleanupChecks(m);
    const logs: string[] = [];
    let leaseGone = false;
    const onState = (s: { leases?: string[] }) => (leaseGone ||= s.leases?.length === 0);
    const stream = mssqlCdc({ connectionString: servers.get(m)!.connectionString, tables: ['Persons'], start: 'earliest', ...FAST, lease: { task: 'shop', checkpointTable: cp, checkEveryMs: 1 }, checkpointEveryRows: 100, log: (l) => logs.push(l), onState });
    const it = stream[Symbol.asyncIterator]();
    const seen: Envelope[] = [];
    while (rowsOf(seen).length < 100) seen.push((await it.next()).value as Envelope);
    await until(() => stalled() > 0);
    // The lock's session dies while the first checkpoint is checked (the worker hears of it);
    // then the checks answer.
    m.killSession(m.lockOwner(leaseResource('shop', { schema: 'dbo', table: 'Persons' }))!);
    await until(() => leaseGone);
    letGo();
    // The worker takes the lease again and reads from the start (nothing was stored).
    const back = await readBackThrough(it, seen, 600);
    await it.return?.();
    expect(logs.join('\n')).toMatch(/the lease session ended .*taking leases again/);
    expect(back).toBeGreaterThanOrEqual(100);
    expect(seen.slice(0, back).filter((e) => e.type === 'checkpoint')).toEqual([]);
    expect(idsOf(seen.slice(back))).toEqual(Array.from({ length: 600 }, (_, i) => i + 1));
  });

  it('names a lease by a lock resource SQL Server compares byte for byte: case-folded, at most 255 characters', () => {
    const persons = { schema: 'dbo', table: 'Persons' };
    expect(leaseResource('Shop', persons)).toBe(leaseResource('shop', { schema: 'DBO', table: 'PERSONS' }));
    const long = (n: string) => ({ schema: 'dbo', table: `${'x'.repeat(300)}${n}` });
    expect(leaseResource('shop', long('a'))).toHaveLength(255);
    expect(leaseResource('shop', long('a'))).not.toBe(leaseResource('shop', long('b')));
  });
});

describe('values CDC does not give', () => {
  it('marks text/ntext/image in deletes and before-images, and unchanged (max) columns in before-images, as unavailable', async () => {
    const m = await serve(new CdcModel());
    m.createTable(
      'dbo.Persons',
      [
        { name: 'Id', type: 'int', nullable: false },
        { name: 'Name', type: 'nvarchar' },
        { name: 'Notes', type: 'ntext' },
        { name: 'Bio', type: 'nvarchar', max: true },
      ],
      ['Id'],
    );
    m.enableTable('dbo.Persons');
    m.commit([{ table: 'Persons', op: 'insert', row: { Id: 1, Name: 'a', Notes: 'n', Bio: 'b' } }]);
    m.commit([{ table: 'Persons', op: 'update', row: { Id: 1, Name: 'a2' } }]);
    m.commit([{ table: 'Persons', op: 'update', row: { Id: 1, Bio: 'b2' } }]);
    m.commit([{ table: 'Persons', op: 'delete', row: { Id: 1 } }]);
    const rows = rowsOf(await readUntil(reader(m, { updateBefore: true }).stream, rowCount(6)));
    expect(rows.map((r) => [r.metadata!.OperationType, r.metadata!.UnavailableColumns ?? []])).toEqual([
      ['Insert', []],
      ['UpdateBefore', ['Notes', 'Bio']],
      ['Update', []],
      ['UpdateBefore', ['Notes']],
      ['Update', []],
      ['Delete', ['Notes']],
    ]);
    expect(rows[3]!.data).toMatchObject({ Bio: 'b', Notes: null });
    expect(rows[5]!.data).toMatchObject({ Bio: 'b2', Notes: null });
  });
});

describe('status against retention, the way the reader resumes', () => {
  it('warns only when the reader would stop: not for a position just below the start, nor below a newer instance', async () => {
    const m = await serve(shopModel());
    persons(m, 1, 3);
    const at = m.currentMaxLsn!;
    // Cleanup up to the very next LSN: the reader resumes exactly there, nothing lost.
    m.cleanup(lsnToHex(incrementLsn(Buffer.from(at.slice(2), 'hex'))));
    m.commit([{ table: 'Customers', op: 'insert', row: { CustomerId: 1 } }]);
    const state = { lsn: at, tables: { 'dbo.Persons': at } };
    const status = async () => {
      const dir = await import('node:fs/promises').then((fs) => fs.mkdtemp(`${process.env.TMPDIR ?? '/tmp'}/dstream-status-`));
      const file = `${dir}/state.json`;
      await import('node:fs/promises').then((fs) => fs.writeFile(file, JSON.stringify({ position: state })));
      const r = await provider(m, ['status', '--tables', 'Persons', '--state-file', file]);
      return ((r.lines[0] as unknown as { resources: Array<{ name: string; warnings?: string[] }> }).resources.find((x) => x.name === 'dbo.Persons'))!;
    };
    expect((await status()).warnings).toBeUndefined();
    const rows = await readUntil(reader(m, { after: state, tables: ['Persons', 'Customers'] }).stream, (s) => s.some((e) => e.type === 'checkpoint'));
    expect(rowsOf(rows).filter((r) => r.metadata!.TableName === 'Persons')).toHaveLength(0);
    // Cleanup past it: now both say so.
    persons(m, 10, 2);
    m.cleanup(m.commit([{ table: 'Persons', op: 'insert', row: { Id: 20 } }]));
    expect((await status()).warnings?.[0]).toMatch(/behind retention/);
  });

  it('shows a snapshot under way: its LSN and the rows read', async () => {
    const m = await serve(shopModel());
    persons(m, 1, 3);
    const at = m.currentMaxLsn!;
    const fs = await import('node:fs/promises');
    const dir = await fs.mkdtemp(`${process.env.TMPDIR ?? '/tmp'}/dstream-status-`);
    await fs.writeFile(`${dir}/state.json`, JSON.stringify({ position: { lsn: at, tables: {}, snapshots: { 'dbo.Persons': { lsn: at, rows: 2, key: [2] } } } }));
    const r = await provider(m, ['status', '--tables', 'Persons', '--state-file', `${dir}/state.json`]);
    const table = (r.lines[0] as unknown as { resources: Array<Record<string, unknown>> }).resources.find((x) => x.name === 'dbo.Persons');
    expect(table).toMatchObject({ position: null, snapshot: { lsn: at, rows: 2 } });
  });
});
