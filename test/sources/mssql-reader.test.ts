import { once } from 'node:events';
import type { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { readUntil as readStream, until, watched } from '../support/streams.js';
import type { Envelope } from '../../lib/envelope/types.js';
import { ErrorCodes } from '../../lib/errors.js';
import { messageIdOf } from '../../lib/sinks/service-bus/message.js';
import { SqlCheckpointStore } from '../../lib/state/sql-store.js';
import { mssqlCdc, parsePosition, type MssqlCdcOptions, type MssqlCdcPosition } from '../../lib/sources/mssql/reader.js';
import { positionOf, readPosition } from '../../lib/sources/mssql/position.js';
import { IDLE_POLLS_AT_BASE } from '../../lib/sources/mssql/reader/windows.js';
import { lsnFromHex } from '../../lib/sources/mssql/lsn.js';
import { sqlServerConnector } from '../../lib/sources/mssql/sqlserver.js';
import { shopModel, type CdcModel } from '../support/cdc-model.js';
import { sqlServerForTest, type TestSqlServer } from '../support/sql-server.js';
import { SqlServerError } from '../support/tds/types.js';

type Opts = Partial<MssqlCdcOptions>;
const FAST: Opts = { pollIntervalMs: 2, maxPollIntervalMs: 5, retryDelayMs: 1, heartbeatMs: 60_000 };
const TABLES = ['Persons', 'sales.Orders', 'Customers'];

/** Each test's model behind its own TDS server: the reader reaches it through the real driver. */
const servers = new WeakMap<CdcModel, TestSqlServer>();
async function serve(m = shopModel()): Promise<CdcModel> {
  servers.set(m, await sqlServerForTest(m));
  return m;
}
const server = (m: CdcModel) => servers.get(m)!;
const connector = (m: CdcModel) => sqlServerConnector(server(m).connectionString);

/** What `init` does for a task with create_checkpoint_table = true. */
async function createCheckpointTable(m: CdcModel): Promise<void> {
  const q = await connector(m)();
  try {
    await q.createCheckpointTable({ schema: 'dstream', table: 'checkpoints' });
  } finally {
    await q.close();
  }
}

function reader(m: CdcModel, opts: Opts = {}, logs: string[] = []) {
  const ac = new AbortController();
  const stream = mssqlCdc({ connectionString: server(m).connectionString, tables: TABLES, start: 'earliest', ...FAST, signal: ac.signal, log: (l) => logs.push(l), ...opts });
  return { stream, ac, logs };
}

// Generous: every statement goes over TCP to the TDS server, on a machine that may be loaded.
const readUntil = (stream: Readable, done: (seen: Envelope[]) => boolean, ms = 20_000) => readStream<Envelope>(stream, done, ms);

const rowsOf = (es: Envelope[]) => es.filter((e) => e.type === 'cdc');
const cps = (es: Envelope[]) => es.filter((e) => e.type === 'checkpoint').map((e) => (e.data as { position: MssqlCdcPosition }).position);
const rowCount = (n: number) => (es: Envelope[]) => rowsOf(es).length >= n && es[es.length - 1]!.type === 'checkpoint';
const key = (e: Envelope) => `${e.metadata!.Schema}.${e.metadata!.TableName}:${e.metadata!.OperationType}:${JSON.stringify(e.data)}`;

function persons(m: CdcModel, from: number, n: number): void {
  for (let i = from; i < from + n; i++) m.commit([{ table: 'Persons', op: 'insert', row: { Id: i, Name: `p${i}`, Email: `p${i}@example.com` } }]);
}

describe('mssqlCdc() through the driver, against the TDS test server', () => {
  it('merges tables in commit order (LSN, seqval, operation) with full metadata', async () => {
    const m = await serve();
    const lsn1 = m.commit([
      { table: 'sales.Orders', op: 'insert', row: { OrderId: '9007199254740993', CustomerId: 7, Total: '12345678901234.5678' } },
      { table: 'Persons', op: 'insert', row: { Id: 1, Name: 'Ada', Email: 'ada@example.com' } },
    ]);
    m.commit([{ table: 'Customers', op: 'insert', row: { CustomerId: 7, Company: 'Analytical Engines' } }]);
    const lsn3 = m.commit([
      { table: 'Persons', op: 'update', row: { Id: 1, Name: 'Ada Lovelace' } },
      { table: 'sales.Orders', op: 'delete', row: { OrderId: '9007199254740993' } },
    ]);
    const { stream } = reader(m);
    const rows = rowsOf(await readUntil(stream, rowCount(5)));
    expect(rows.map((r) => `${r.metadata!.TableName}:${r.metadata!.OperationType}`)).toEqual([
      'Orders:Insert',
      'Persons:Insert',
      'Customers:Insert',
      'Persons:Update',
      'Orders:Delete',
    ]);
    expect(rows[0]).toEqual({
      source: 'mssql-cdc',
      type: 'cdc',
      data: { OrderId: '9007199254740993', CustomerId: 7, Total: '12345678901234.5678' },
      metadata: expect.objectContaining({ TableName: 'Orders', Schema: 'sales', Database: 'shop', OperationType: 'Insert', OperationID: 2, LSN: lsn1, CaptureInstance: 'sales_Orders' }),
    });
    expect(rows[0]!.metadata!.Seq).toMatch(/^0x[0-9A-F]{20}$/);
    // Each row's commit time, exactly as SQL Server's CONVERT(..., 126) prints cdc.lsn_time_mapping.tran_end_time.
    expect(rows.map((r) => r.metadata!.CommitTime)).toEqual(['2026-01-01T12:00:01', '2026-01-01T12:00:01', '2026-01-01T12:00:02', '2026-01-01T12:00:03', '2026-01-01T12:00:03']);
    expect(rows[3]!.data).toEqual({ Id: 1, Name: 'Ada Lovelace', Email: 'ada@example.com' });
    expect(rows[3]!.metadata!.OperationID).toBe(4);
    expect(rows[4]!.metadata).toMatchObject({ LSN: lsn3, OperationID: 1 });
    // Within one commit, seqval orders the rows.
    expect(rows[3]!.metadata!.Seq! < rows[4]!.metadata!.Seq!).toBe(true);
  });

  it('emits before-images as UpdateBefore when asked', async () => {
    const m = await serve();
    m.commit([{ table: 'Persons', op: 'insert', row: { Id: 1, Name: 'Ada', Email: 'a@x' } }]);
    m.commit([{ table: 'Persons', op: 'update', row: { Id: 1, Name: 'Ada L' } }]);
    const rows = rowsOf(await readUntil(reader(m, { updateBefore: true }).stream, rowCount(3)));
    expect(rows.map((r) => [r.metadata!.OperationType, r.metadata!.OperationID, (r.data as { Name: string }).Name])).toEqual([
      ['Insert', 2, 'Ada'],
      ['UpdateBefore', 3, 'Ada'],
      ['Update', 4, 'Ada L'],
    ]);
  });

  it('puts checkpoints only at transaction boundaries, never inside a commit', async () => {
    const m = await serve();
    for (let i = 1; i <= 30; i++) {
      m.commit([
        { table: 'Persons', op: 'insert', row: { Id: i, Name: `p${i}` } },
        { table: 'Customers', op: 'insert', row: { CustomerId: i, Company: `c${i}` } },
        { table: 'sales.Orders', op: 'insert', row: { OrderId: String(i), CustomerId: i, Total: '1.00' } },
      ]);
    }
    const seen = await readUntil(reader(m, { checkpointEveryRows: 2 }).stream, rowCount(90));
    let checkpoints = 0;
    seen.forEach((e, i) => {
      if (e.type !== 'checkpoint') return;
      checkpoints++;
      const at = (e.data as { position: MssqlCdcPosition }).position;
      const before = rowsOf(seen.slice(0, i));
      const after = rowsOf(seen.slice(i + 1));
      // Everything before is at or below every table's position; nothing after is.
      for (const r of before) expect(r.metadata!.LSN! <= at.lsn).toBe(true);
      for (const r of after) expect(r.metadata!.LSN! > at.lsn).toBe(true);
      if (before.length > 0) expect(before.length % 3).toBe(0);
    });
    expect(checkpoints).toBeGreaterThanOrEqual(15);
  });

  it('resumes after a checkpoint with no loss and no duplicate', async () => {
    const m = await serve();
    for (let i = 1; i <= 40; i++) {
      m.commit([
        { table: 'Persons', op: 'insert', row: { Id: i, Name: `p${i}` } },
        ...(i % 3 === 0 ? [{ table: 'Customers', op: 'insert' as const, row: { CustomerId: i, Company: `c${i}` } }] : []),
      ]);
    }
    const all = rowsOf(await readUntil(reader(m).stream, rowCount(53))).map(key);
    expect(all).toHaveLength(53);
    // First run: stop after the 4th checkpoint; only what precedes it counts as delivered.
    let n = 0;
    const first = await readUntil(reader(m, { checkpointEveryRows: 5 }).stream, (s) => s[s.length - 1]!.type === 'checkpoint' && ++n === 4);
    const position = cps(first).at(-1)!;
    m.commit([{ table: 'Persons', op: 'insert', row: { Id: 41, Name: 'late' } }]);
    const second = await readUntil(reader(m, { after: position }).stream, (s) => rowsOf(s).length >= 54 - rowsOf(first).length && s[s.length - 1]!.type === 'checkpoint');
    expect([...rowsOf(first), ...rowsOf(second)].map(key)).toEqual([...all, 'dbo.Persons:Insert:{"Id":41,"Name":"late","Email":null}']);
  });

  it('starts at latest by default: only changes committed after the start, and stores that start', async () => {
    const m = await serve();
    persons(m, 1, 3);
    const { stream } = reader(m, { start: 'latest' });
    const it = stream[Symbol.asyncIterator]();
    const first = (await it.next()).value as Envelope;
    expect(first.type).toBe('checkpoint');
    expect((first.data as { position: MssqlCdcPosition }).position.tables['dbo.Persons']).toBe(m.currentMaxLsn);
    persons(m, 4, 2);
    const seen: Envelope[] = [];
    while (rowsOf(seen).length < 2) seen.push((await it.next()).value as Envelope);
    await it.return?.();
    expect(rowsOf(seen).map((r) => (r.data as { Id: number }).Id)).toEqual([4, 5]);
  });

  it('starts at an explicit LSN (inclusive)', async () => {
    const m = await serve();
    persons(m, 1, 2);
    const third = m.commit([{ table: 'Persons', op: 'insert', row: { Id: 3, Name: 'x' } }]);
    persons(m, 4, 1);
    const rows = rowsOf(await readUntil(reader(m, { start: third }).stream, rowCount(2)));
    expect(rows.map((r) => (r.data as { Id: number }).Id)).toEqual([3, 4]);
    expect(() => mssqlCdc({ connectionString: server(m).connectionString, tables: ['Persons'], start: '0x12' })).toThrow(/start must be 10 bytes in hex/);
  });

  it('moves through an empty window and keeps idle tables moving with heartbeat checkpoints', async () => {
    const m = await serve();
    m.tick();
    const logs: string[] = [];
    const { stream } = reader(m, { heartbeatMs: 0, start: 'latest' }, logs);
    const it = stream[Symbol.asyncIterator]();
    const start = (await it.next()).value as Envelope;
    expect(start.type).toBe('checkpoint');
    // Other activity in the database (and the quiet-period entries SQL Server logs) move max LSN.
    const tick = m.tick();
    let cp: MssqlCdcPosition | undefined;
    for (;;) {
      const e = (await it.next()).value as Envelope;
      expect(e.type).toBe('checkpoint');
      cp = (e.data as { position: MssqlCdcPosition }).position;
      if (cp.lsn === tick) break;
    }
    // Persons gets a change; Customers stays idle but its position moves with the window.
    const lsn = m.commit([{ table: 'Persons', op: 'insert', row: { Id: 1 } }]);
    let last: MssqlCdcPosition | undefined;
    for (;;) {
      const e = (await it.next()).value as Envelope;
      if (e.type === 'checkpoint') last = (e.data as { position: MssqlCdcPosition }).position;
      if (last?.tables['dbo.Persons'] === lsn) break;
    }
    await it.return?.();
    expect(last!.tables).toEqual({ 'dbo.Customers': lsn, 'dbo.Persons': lsn, 'sales.Orders': lsn });
  });

  it('streams every table with changes in a window at once, even with more tables than max_connections', async () => {
    const m = await serve();
    // Rows too wide for the socket buffers: a stream holds its connection until it is read.
    const wide = 'x'.repeat(4000);
    for (let i = 1; i <= 800; i++) {
      m.commit([
        { table: 'Persons', op: 'insert', row: { Id: i, Name: wide } },
        { table: 'sales.Orders', op: 'insert', row: { OrderId: String(i) } },
        { table: 'Customers', op: 'insert', row: { CustomerId: i, Company: wide } },
      ]);
    }
    // The merge needs the head of every table's stream: with two connections for three streams it would wait forever.
    const rows = rowsOf(await readUntil(reader(m, { maxConnections: 2, maxTransactions: 1000 }).stream, rowCount(2400), 25_000));
    expect(rows).toHaveLength(2400);
    expect(m.maxOpenStreams).toBeGreaterThanOrEqual(2);
  });

  it('backs off while idle and polls at the base interval again once changes come', async () => {
    const m = await serve();
    m.tick();
    // A ceiling far above the base: a reader still backing off once changes come would take minutes for the polls below.
    const { stream } = reader(m, { start: 'latest', pollIntervalMs: 5, maxPollIntervalMs: 60_000, tables: ['Persons'] });
    const it = stream[Symbol.asyncIterator]();
    await it.next(); // the start checkpoint
    const polls = () => m.calls.get('sys.fn_cdc_get_max_lsn') ?? 0;
    // When each idle poll starts: the waits between them are what backs off.
    const idle: number[] = [];
    m.beforeStatement = (name) => void (name === 'sys.fn_cdc_get_max_lsn' && idle.push(Date.now()));
    await until(() => idle.length >= 8 + IDLE_POLLS_AT_BASE);
    m.beforeStatement = undefined;
    // Waits of 5 ms for the first IDLE_POLLS_AT_BASE idle polls, then 10, 20, 40, ... ms: by the
    // eleventh idle poll one wait is at least 320 ms (one less if the first poll counted was already
    // under way). A poll without back-off waits 5 ms plus its own statements.
    const gaps = idle.slice(1).map((t, i) => t - idle[i]!);
    expect(Math.max(...gaps)).toBeGreaterThanOrEqual(300);
    persons(m, 1, 1);
    await it.next(); // found within the back-off (1.3 s or so by now); activity resets it
    // At the base interval the next polls come while rows keep coming; still backing off, the
    // next four would wait 2.6 + 5.1 + 10.2 + 20.5 s, past what until() waits.
    const busyFrom = polls();
    let id = 2;
    const committing = setInterval(() => persons(m, id++, 1), 20);
    try {
      await until(() => polls() - busyFrom >= 4, 15_000);
    } finally {
      clearInterval(committing);
    }
    await it.return?.();
  });

  it('polls again at once after a window that took longer than the poll interval (behind: no sleep)', async () => {
    const m = await serve();
    const POLL = 1500;
    const { stream } = reader(m, { pollIntervalMs: POLL, maxPollIntervalMs: 60_000, tables: ['Persons'] });
    const it = stream[Symbol.asyncIterator]();
    const polls: number[] = [];
    m.beforeStatement = (name) => void (name === 'sys.fn_cdc_get_max_lsn' && polls.push(Date.now()));
    // More rows than the stream buffers: the window waits for its consumer, which holds it past the interval.
    persons(m, 1, 300);
    let n = 0;
    let during = 0;
    for (;;) {
      const e = (await it.next()).value as Envelope;
      if (e.type === 'cdc' && ++n === 1) {
        during = polls.length; // up to this window's own poll
        await new Promise((r) => setTimeout(r, POLL + 500));
      }
      if (e.type === 'checkpoint' && n === 300) break;
    }
    const ended = Date.now();
    await until(() => polls.length > during, 10_000);
    m.beforeStatement = undefined;
    // The window took longer than the interval: the next poll starts right after it (a reader
    // that sleeps the whole interval after every window starts it POLL ms after).
    expect(polls[during]! - ended).toBeLessThan(POLL - 500);
    await it.return?.();
  });

  it('reads a large backlog in bounded windows, streaming only tables with changes', async () => {
    const m = await serve();
    for (let i = 1; i <= 3000; i++) m.commit([{ table: i % 2 ? 'Persons' : 'Customers', op: 'insert', row: i % 2 ? { Id: i, Name: 'n' } : { CustomerId: i, Company: 'c' } }]);
    const seen = await readUntil(reader(m, { maxTransactions: 100 }).stream, rowCount(3000), 50_000);
    const rows = rowsOf(seen);
    expect(rows).toHaveLength(3000);
    const lsns = rows.map((r) => r.metadata!.LSN!);
    expect([...lsns].sort()).toEqual(lsns);
    expect(m.calls.get('cdc.lsn_time_mapping')).toBeGreaterThanOrEqual(30);
    // At most two streams per table with changes: this window's, and the next one's opened ahead.
    expect(m.maxOpenStreams).toBeLessThanOrEqual(4);
    expect(cps(seen).length).toBeGreaterThanOrEqual(30);
    // 30 windows, each table's change table named twice in each: counted (while the window before
    // was read: asked ahead, never asked twice), then read (opened ahead too, never read twice).
    expect(m.calls.get('cdc.dbo_Persons_CT')).toBe(60);
    expect(m.calls.get('cdc.dbo_Customers_CT')).toBe(60);
    // Orders never changed: counted in each window, never read.
    expect(m.calls.get('cdc.sales_Orders_CT')).toBe(30);
  }, 60_000);

  it('a table reaching max_rows ends the window there, and the tables after it are counted again up to that end', async () => {
    const m = await serve();
    for (let i = 1; i <= 600; i++) m.commit([{ table: i % 2 ? 'Persons' : 'Customers', op: 'insert', row: i % 2 ? { Id: i, Name: 'n' } : { CustomerId: i, Company: 'c' } }]);
    const seen = await readUntil(reader(m, { maxRows: 50 }).stream, rowCount(600));
    const rows = rowsOf(seen);
    // Each change once, in commit order: Customers read only up to where Persons' 50th row ended each window.
    expect(rows.map((r) => (r.data as { Id?: number; CustomerId?: number }).Id ?? (r.data as { CustomerId: number }).CustomerId)).toEqual(Array.from({ length: 600 }, (_, i) => i + 1));
    expect(cps(seen).length).toBeGreaterThanOrEqual(6);
  }, 30_000);

  /** Reads until `n` rows and a checkpoint; the consumer stops after the first envelope until `go` resolves. */
  async function readPausedAtFirst(stream: Readable, n: number, go: () => Promise<unknown>): Promise<Envelope[]> {
    const seen: Envelope[] = [];
    const failed = new Promise<never>((_, reject) => stream.once('error', reject));
    await Promise.race([once(stream, 'data').then(([e]) => seen.push(e as Envelope)), failed]);
    stream.pause();
    await Promise.race([go(), failed]);
    stream.on('data', (e: Envelope) => seen.push(e));
    stream.resume();
    await Promise.race([until(() => rowCount(n)(seen), 15_000), failed]);
    stream.destroy();
    return seen;
  }

  it('opens the next window\'s reads while a capped window is read, and reads each range once', async () => {
    const m = await serve();
    persons(m, 1, 3000);
    const { stream } = reader(m, { tables: ['Persons'], maxTransactions: 1000 });
    // The consumer holds the first window's rows: meanwhile the second window is counted (call 3)
    // and its read opened (call 4), before the first window's rows are all handed on.
    const seen = await readPausedAtFirst(stream, 3000, () => until(() => (m.calls.get('cdc.dbo_Persons_CT') ?? 0) >= 4, 5000));
    expect(rowsOf(seen).map((e) => (e.data as { Id: number }).Id)).toEqual(Array.from({ length: 3000 }, (_, i) => i + 1));
    // Three windows, each counted once and read once; no read was opened and cancelled.
    expect(m.calls.get('cdc.dbo_Persons_CT')).toBe(6);
    expect(m.calls.get('attention') ?? 0).toBe(0);
  });

  it('a read opened ahead that fails before its window takes it is read again in its window: each change once, no recovery', async () => {
    const m = await serve();
    persons(m, 1, 3000);
    let reads = 0;
    let failed = false;
    m.beforeStatement = (name) => {
      // The fourth statement on the change table: the second window's read, opened ahead.
      if (name === 'cdc.dbo_Persons_CT' && ++reads === 4) {
        failed = true;
        throw new SqlServerError(1205, 'Transaction (Process ID 52) was deadlocked on lock resources with another process and has been chosen as the deadlock victim. Rerun the transaction.', 13);
      }
    };
    const logs: string[] = [];
    const { stream } = reader(m, { tables: ['Persons'], maxTransactions: 1000 }, logs);
    // The first window's rows are held until the failure has reached the reader.
    const seen = await readPausedAtFirst(stream, 3000, () => until(() => failed, 5000).then(() => new Promise((r) => setTimeout(r, 200))));
    expect(rowsOf(seen).map((e) => (e.data as { Id: number }).Id)).toEqual(Array.from({ length: 3000 }, (_, i) => i + 1));
    // Counted and read once per window, and the failed read once more.
    expect(m.calls.get('cdc.dbo_Persons_CT')).toBe(7);
    expect(logs.join('\n')).not.toMatch(/lost the connection|reading again/);
  });

  describe('cleanup overtaking the position', () => {
    async function gapSetup(opts: Opts) {
      const m = await serve();
      persons(m, 1, 3);
      const first = await readUntil(reader(m).stream, rowCount(3));
      const position = cps(first).at(-1)!;
      persons(m, 4, 3); // never read
      m.commit([{ table: 'Customers', op: 'insert', row: { CustomerId: 1, Company: 'c' } }]);
      const kept = m.commit([{ table: 'Persons', op: 'insert', row: { Id: 7, Name: 'kept' } }]);
      m.cleanup(kept);
      const logs: string[] = [];
      return { m, position, kept, logs, r: reader(m, { after: position, ...opts }, logs) };
    }

    it('fails with DSTREAM_ERR_CDC_GAP by default, saying what happened and the options', async () => {
      const { r, kept } = await gapSetup({});
      const err = await readUntil(r.stream, () => false).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: ErrorCodes.CDC_GAP, details: expect.objectContaining({ table: 'dbo.Persons', minLsn: kept }) });
      expect((err as Error).message).toMatch(/cleanup has removed changes.*on_gap = "snapshot".*on_gap = "skip".*sp_cdc_change_job/s);
    });

    it('on_gap = "skip" warns loudly and continues from the oldest retained change', async () => {
      const { r } = await gapSetup({ onGap: 'skip' });
      const rows = rowsOf(await readUntil(r.stream, rowCount(1)));
      expect(rows.map((e) => (e.data as { Id: number }).Id)).toEqual([7]);
      expect(r.logs.join('\n')).toMatch(/WARNING: dbo\.Persons: .*LOST/);
      expect(r.logs.join('\n')).toMatch(/WARNING: dbo\.Customers: .*LOST/);
    });

    it('on_gap = "snapshot" re-reads the current rows (Read) and streams from there', async () => {
      const { r } = await gapSetup({ onGap: 'snapshot' });
      const seen = await readUntil(r.stream, (s) => rowsOf(s).length >= 8 && s.at(-1)!.type === 'checkpoint');
      const rows = rowsOf(seen);
      expect(rows.every((e) => e.metadata!.OperationType === 'Read')).toBe(true);
      expect(rows.filter((e) => e.metadata!.TableName === 'Persons').map((e) => (e.data as { Id: number }).Id)).toEqual([1, 2, 3, 4, 5, 6, 7]);
      expect(rows.filter((e) => e.metadata!.TableName === 'Customers')).toHaveLength(1);
      expect(r.logs.join('\n')).toMatch(/on_gap = "snapshot"/);
    });
  });

  it('reports a gap when cleanup runs between the gap check and the read (error 313), not a bare SQL error', async () => {
    const m = await serve();
    persons(m, 1, 2);
    const position = cps(await readUntil(reader(m, { tables: ['Persons'] }).stream, rowCount(2))).at(-1)!;
    persons(m, 3, 2);
    const kept = m.commit([{ table: 'Persons', op: 'insert', row: { Id: 5 } }]);
    m.beforeStatement = (name) => {
      if (name !== 'cdc.fn_cdc_get_all_changes_dbo_Persons') return;
      m.beforeStatement = undefined;
      m.cleanup(kept);
    };
    const logs: string[] = [];
    const err = await readUntil(reader(m, { tables: ['Persons'], after: position, queryMode: 'function' }, logs).stream, () => false).catch((e: unknown) => e);
    // SQL Server's text for 313 names no instance ("cdc.fn_cdc_get_all_changes_ ... .").
    expect(logs.join('\n')).toMatch(/the retained LSN range moved while reading \(An insufficient number of arguments were supplied for the procedure or function cdc\.fn_cdc_get_all_changes_ \.\.\. \.\); reading again from the last checkpoint/);
    expect(err).toMatchObject({ code: ErrorCodes.CDC_GAP });
  });

  it('switches to the newer capture instance at its start LSN and says so', async () => {
    const m = await serve();
    persons(m, 1, 2);
    m.addColumn('Persons', { name: 'Phone', type: 'varchar' });
    m.enableTable('Persons', 'dbo_Persons_v2');
    // Both instances capture from here on; each change must come out once, from the newer instance.
    m.commit([{ table: 'Persons', op: 'insert', row: { Id: 3, Name: 'n', Phone: '555' } }]);
    m.commit([{ table: 'Persons', op: 'update', row: { Id: 1, Phone: '556' } }]);
    const logs: string[] = [];
    const rows = rowsOf(await readUntil(reader(m, {}, logs).stream, rowCount(4)));
    expect(rows.map((r) => [r.metadata!.CaptureInstance, r.metadata!.OperationType, (r.data as { Id: number }).Id])).toEqual([
      ['dbo_Persons', 'Insert', 1],
      ['dbo_Persons', 'Insert', 2],
      ['dbo_Persons_v2', 'Insert', 3],
      ['dbo_Persons_v2', 'Update', 1],
    ]);
    expect(rows[3]!.data).toEqual({ Id: 1, Name: 'p1', Email: 'p1@example.com', Phone: '556' });
    expect(logs.join('\n')).toMatch(/dbo\.Persons: switching from capture instance dbo_Persons to dbo_Persons_v2, which starts at LSN 0x/);
  });

  it('snapshots current rows before streaming when asked, consistent with the LSN it starts from', async () => {
    const m = await serve();
    persons(m, 1, 3);
    m.commit([{ table: 'Persons', op: 'delete', row: { Id: 2 } }]);
    const { stream } = reader(m, { snapshot: true, start: 'latest', tables: ['Persons'] });
    const it = stream[Symbol.asyncIterator]();
    const seen: Envelope[] = [];
    for (;;) {
      const e = (await it.next()).value as Envelope;
      seen.push(e);
      if (e.type === 'checkpoint' && (e.data as { position: MssqlCdcPosition }).position.tables['dbo.Persons'] !== undefined) break;
    }
    persons(m, 4, 1);
    for (;;) {
      const e = (await it.next()).value as Envelope;
      seen.push(e);
      if (e.type === 'cdc') break;
    }
    await it.return?.();
    expect(rowsOf(seen).map((e) => [e.metadata!.OperationType, (e.data as { Id: number }).Id])).toEqual([
      ['Read', 1],
      ['Read', 3],
      ['Insert', 4],
    ]);
    // Each snapshot row has its own Seq, so its own MessageId: duplicate detection must not fold them.
    const reads = rowsOf(seen).filter((e) => e.metadata!.OperationType === 'Read');
    expect(reads.map((e) => e.metadata!.Seq)).toEqual(['0x00000000000000000001', '0x00000000000000000002']);
    expect(new Set(reads.map((e) => messageIdOf('Persons_cdc_events', e))).size).toBe(2);
    expect(cps(seen)[1]!.tables['dbo.Persons']).toBe(rowsOf(seen)[0]!.metadata!.LSN);
  });

  it('reconnects with back-off after a dropped connection and resumes from the last checkpoint', async () => {
    const m = await serve();
    // More than the reader reads ahead of its consumer (the driver's buffer, and the rows it holds
    // after a checkpoint while that checkpoint is checked), so the drop comes mid-window.
    const n = 12_000;
    persons(m, 1, n);
    const db = server(m);
    // The server is down for the first two reconnection attempts.
    const logs = watched((l) => /reconnecting \(attempt 2 of 20\) failed/.test(l) && void db.up());
    const { stream } = reader(m, { checkpointEveryRows: 50, tables: ['Persons'] }, logs);
    const seen: Envelope[] = [];
    let dropped = false;
    let rows = 0;
    let lastId = 0;
    for await (const e of stream) {
      seen.push(e as Envelope);
      if ((e as Envelope).type === 'cdc') {
        rows++;
        lastId = ((e as Envelope).data as { Id: number }).Id;
      }
      if (!dropped && rows === 100) {
        // Mid-window: the reader is still streaming this window's rows.
        dropped = true;
        m.dropConnections();
        await db.down();
        persons(m, n + 1, 5);
      }
      if (lastId === n + 5 && (e as Envelope).type === 'checkpoint') break;
    }
    expect(logs.join('\n')).toMatch(/lost the connection to 127\.0\.0\.1:\d+\/shop .*reconnecting/);
    expect(logs.join('\n')).toMatch(/reconnecting \(attempt 1 of 20\) failed/);
    // Nothing lost and nothing out of order: after the drop, reading goes back to the last
    // checkpoint it emitted (a transaction boundary) and repeats only what followed it.
    const ids = rowsOf(seen).map((r) => (r.data as { Id: number }).Id);
    expect(new Set(ids).size).toBe(n + 5);
    let high = 0;
    let replays = 0;
    for (const [i, id] of ids.entries()) {
      expect(id).toBeLessThanOrEqual(high + 1);
      if (id <= high) {
        replays++;
        // A replay starts right after a checkpoint the reader had emitted.
        if (ids[i - 1]! >= id) expect((id - 1) % 50).toBe(0);
      }
      high = Math.max(high, id);
    }
    expect(replays).toBeGreaterThan(0);
  });

  it('gives up when reading keeps failing without progress, backing off between attempts', async () => {
    const m = await serve();
    persons(m, 1, 3);
    m.beforeStatement = (name) => {
      if (name === 'cdc.fn_cdc_get_all_changes_dbo_Persons') throw new SqlServerError(40613, 'Database shop on server is not currently available.');
    };
    const logs: string[] = [];
    const err = await readUntil(reader(m, { tables: ['Persons'], reconnectAttempts: 3, queryMode: 'function' }, logs).stream, () => false).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCodes.SQL_CONNECT, message: expect.stringMatching(/^reading changes \(gave up after 3 attempts without progress\): the connection to SQL Server at 127\.0\.0\.1:\d+\/shop failed: Database shop on server is not currently available\.$/) });
    expect(logs.filter((l) => /lost the connection/.test(l))).toHaveLength(3);
    expect(m.calls.get('cdc.fn_cdc_get_all_changes_dbo_Persons')).toBe(4);
  });

  it('gives up connecting at start after the set attempts, naming host and port but never the password', async () => {
    const m = await serve();
    await server(m).down();
    const logs: string[] = [];
    const err = await readUntil(reader(m, { connectAttempts: 3 }, logs).stream, () => false).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCodes.SQL_CONNECT });
    expect((err as Error).message).toMatch(/could not connect to SQL Server at 127\.0\.0\.1:\d+\/shop: .*ECONNREFUSED.*gave up after 3 attempts/);
    expect(logs.filter((l) => /attempt \d of 3/.test(l))).toHaveLength(2);
    await server(m).up();
    m.loginFails = true;
    const login = await readUntil(reader(m, { connectAttempts: 3 }).stream, () => false).catch((e: unknown) => e);
    expect((login as Error).message).toMatch(/refused the login: Login failed for user 'dstream'.*check User Id and Password/);
    expect(m.calls.get('login')).toBe(1); // a refused login is not retried
  });

  it('explains what to run when CDC is off, a table is missing or untracked, a permission is missing, or the Agent is stopped', async () => {
    const m = await serve();
    m.cdcEnabled = false;
    const fail = (opts: Opts = {}) => readUntil(reader(m, opts).stream, () => false).catch((e: unknown) => e as Error & { code: string });
    expect(await fail()).toMatchObject({ code: ErrorCodes.CDC_NOT_ENABLED, message: expect.stringMatching(/CDC is not enabled on database shop.*EXEC sys\.sp_cdc_enable_db/) });
    expect(await fail({ connectionString: server(m).connectionStringFor({ database: 'master' }) })).toMatchObject({ code: ErrorCodes.CDC_NOT_ENABLED, message: expect.stringMatching(/connected to the system database master .*Database=/) });
    m.cdcEnabled = true;
    expect(await fail({ tables: ['Person'] })).toMatchObject({ code: ErrorCodes.TABLE_NOT_FOUND, message: expect.stringMatching(/table dbo\.Person does not exist .*did you mean dbo\.Persons\?/) });
    m.createTable('dbo.Audit', [{ name: 'Id', type: 'int' }], ['Id']);
    expect(await fail({ tables: ['Audit'] })).toMatchObject({
      code: ErrorCodes.CDC_NOT_ENABLED,
      message: expect.stringMatching(/EXEC sys\.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'Audit', @role_name = NULL/),
    });
    m.denied.add('cdc.change_tables');
    expect(await fail()).toMatchObject({ code: ErrorCodes.SQL_PERMISSION, message: expect.stringMatching(/permission denied at 127\.0\.0\.1:\d+\/shop: The SELECT permission was denied.*SELECT on the captured tables and on schema cdc/) });
    m.denied.clear();
    persons(m, 1, 1);
    m.agent = 'stopped';
    const logs: string[] = [];
    await readUntil(reader(m, {}, logs).stream, rowCount(1));
    expect(logs.join('\n')).toMatch(/SQL Server Agent is not running .*capture job is idle.*MSSQL_AGENT_ENABLED=true/);
  });

  // The capture-instance query is sent together with the max LSN (one round trip): it may still be on its way when the stop lands.
  const SENT_WITH_MAX_LSN = new Set(['cdc.change_tables', 'cdc.captured_columns', 'sys.tables', 'sys.schemas', 'sys.columns']);
  it.each(['destroyed', 'aborted'] as const)('a reader stopped (%s) while a window is being prepared sends no further statement and ends', async (how) => {
    const m = await serve();
    persons(m, 1, 5);
    const { stream, ac } = reader(m, { tables: ['Persons'] });
    // The stop lands when the window's max LSN reaches the server; every statement after it is recorded.
    let stopped = false;
    const after: string[] = [];
    m.beforeStatement = (name) => {
      if (stopped) after.push(name);
      else if (name === 'sys.fn_cdc_get_max_lsn') {
        stopped = true;
        if (how === 'destroyed') stream.destroy();
        else ac.abort();
      }
    };
    const closed = once(stream, 'close');
    stream.resume();
    await closed;
    expect(stopped).toBe(true);
    expect(after.filter((n) => !SENT_WITH_MAX_LSN.has(n))).toEqual([]);
  });

  it('a reader whose signal aborted before it started reads no change and ends', async () => {
    const m = await serve();
    persons(m, 1, 5);
    const named: string[] = [];
    m.beforeStatement = (name) => void named.push(name);
    const ac = new AbortController();
    ac.abort();
    const stream = mssqlCdc({ connectionString: server(m).connectionString, tables: ['Persons'], start: 'earliest', ...FAST, signal: ac.signal });
    const seen: Envelope[] = [];
    const errors: Error[] = [];
    stream.on('data', (e: Envelope) => seen.push(e));
    // As any Node stream given an aborted signal: it ends with the AbortError, having done nothing.
    stream.on('error', (err) => errors.push(err));
    await new Promise((resolve) => stream.on('close', resolve));
    expect(errors.map((e) => e.name)).toEqual(['AbortError']);
    expect(rowsOf(seen)).toEqual([]);
    expect(named.filter((n) => n.endsWith('_CT'))).toEqual([]);
  });

  it('rejects a position that is not an mssql-cdc position, naming the way out', () => {
    expect(() => parsePosition({ lsn: '0x01', tx: 3 })).toThrow(/not an mssql-cdc position.*dstream reset/);
    expect(() => parsePosition({ tables: { 'dbo.Persons': 'zz' } })).toThrow(/stored position of dbo\.Persons must be 10 bytes/);
  });

  it('hands a table over between two workers through leases, from the stored checkpoint', async () => {
    const m = await serve();
    const store = new SqlCheckpointStore(connector(m), 'dstream.checkpoints');
    await createCheckpointTable(m);
    persons(m, 1, 10);
    m.commit([{ table: 'Customers', op: 'insert', row: { CustomerId: 1, Company: 'c' } }]);
    const lease = { task: 'shop', checkpointTable: { schema: 'dstream', table: 'checkpoints' }, checkEveryMs: 1 };
    const a = reader(m, { lease, checkpointEveryRows: 3, tables: ['Persons', 'Customers'] });
    const b = reader(m, { lease, tables: ['Persons', 'Customers'] });
    // Worker A takes both tables; what it acknowledges is saved as an executor would.
    const aSeen: Envelope[] = [];
    for await (const e of a.stream) {
      aSeen.push(e as Envelope);
      if (e && (e as Envelope).type === 'checkpoint') {
        await store.save('shop', (e as Envelope<{ position: unknown }>).data.position, 'mssql-cdc');
        if (rowsOf(aSeen).length >= 6) break; // A dies here, holding unacknowledged nothing
      }
    }
    await until(() => m.locks.size === 0); // closing A's session released its leases
    // Worker B was started after; it takes both tables and continues from the stored positions.
    const bRows = rowsOf(await readUntil(b.stream, (s) => rowsOf(s).length + rowsOf(aSeen).length >= 11 && s.at(-1)!.type === 'checkpoint'));
    const ids = [...rowsOf(aSeen), ...bRows].map((r) => `${r.metadata!.TableName}${JSON.stringify(r.data)}`);
    expect(new Set(ids).size).toBe(11);
    expect(ids).toHaveLength(11);
    expect(b.logs.join('\n')).toMatch(/lease on dbo\.Persons taken; reading from after the stored position 0x/);
  });

  it('spreads tables over workers with a per-worker limit', async () => {
    const m = await serve();
    await createCheckpointTable(m);
    m.commit([
      { table: 'Persons', op: 'insert', row: { Id: 1 } },
      { table: 'sales.Orders', op: 'insert', row: { OrderId: '1' } },
      { table: 'Customers', op: 'insert', row: { CustomerId: 1 } },
    ]);
    const lease = { task: 'shop', checkpointTable: { schema: 'dstream', table: 'checkpoints' }, checkEveryMs: 1, maxTables: 2 };
    const a = reader(m, { lease });
    const b = reader(m, { lease });
    // A keeps running (holding its two tables) while B starts.
    const ait = a.stream[Symbol.asyncIterator]();
    const aSeen: Envelope[] = [];
    while (rowsOf(aSeen).length < 2) aSeen.push((await ait.next()).value as Envelope);
    const bRows = rowsOf(await readUntil(b.stream, rowCount(1)));
    await ait.return?.();
    expect(rowsOf(aSeen).map((r) => r.metadata!.TableName)).toEqual(['Persons', 'Orders']);
    expect(bRows.map((r) => r.metadata!.TableName)).toEqual(['Customers']);
  });

  it('lets only one worker read a table at a time; the standby takes over when the holder dies', async () => {
    const m = await serve();
    await createCheckpointTable(m);
    const lease = { task: 'shop', checkpointTable: { schema: 'dstream', table: 'checkpoints' }, checkEveryMs: 1 };
    const a = reader(m, { lease, tables: ['Persons'] });
    const b = reader(m, { lease, tables: ['Persons'] });
    const ait = a.stream[Symbol.asyncIterator]();
    const bit = b.stream[Symbol.asyncIterator]();
    persons(m, 1, 2);
    // A started first and holds the lease; B polls as a standby and sees nothing.
    const firstA = await ait.next();
    expect(firstA.done).toBe(false);
    const bNext = bit.next();
    let bDone = false;
    void bNext.then(() => (bDone = true));
    const rowsA: Envelope[] = [firstA.value as Envelope];
    while (rowsOf(rowsA).length < 2) rowsA.push((await ait.next()).value as Envelope);
    await until(() => /standby: every table is leased by another worker/.test(b.logs.join('\n')));
    expect(bDone).toBe(false);
    // A's connection dies (the process was killed): its session lock goes with it.
    m.dropConnections();
    await ait.return?.();
    const fromB = (await bNext).value as Envelope;
    expect(fromB.type).toBe('cdc');
    expect(b.logs.join('\n')).toMatch(/lease on dbo\.Persons taken/);
    await bit.return?.();
  });
});

describe('a snapshot checkpointed per chunk', () => {
  const readOnly = (es: Envelope[]) => rowsOf(es).filter((e) => e.metadata!.OperationType === 'Read');
  /** Reads until `n` snapshot rows have arrived, then stops the reader there (as a crash would). */
  async function readThenStop(stream: Readable, n: number): Promise<Envelope[]> {
    const it = stream[Symbol.asyncIterator]();
    const seen: Envelope[] = [];
    while (readOnly(seen).length < n) seen.push((await it.next()).value as Envelope);
    await it.return?.();
    return seen;
  }
  const snapshotDone = (table: string) => (es: Envelope[]) => cps(es).some((p) => p.tables[table] !== undefined && p.snapshots?.[table] === undefined);

  it('checkpoints at the start, every snapshot_chunk_rows rows with the snapshot LSN, the rows so far and the last key, and once when the table is done', async () => {
    const m = await serve();
    persons(m, 1, 10);
    const seen = await readUntil(reader(m, { snapshot: true, start: 'latest', tables: ['Persons'], snapshotChunkRows: 4 }).stream, snapshotDone('dbo.Persons'));
    const reads = readOnly(seen);
    expect(reads.map((e) => (e.data as { Id: number }).Id)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const lsn = reads[0]!.metadata!.LSN as string;
    const positions = cps(seen);
    expect(positions).toEqual([
      // Before the first row: a restart takes the same snapshot (its LSN) from the start.
      { lsn, tables: {}, snapshots: { 'dbo.Persons': { lsn, rows: 0, key: [] } } },
      { lsn, tables: {}, snapshots: { 'dbo.Persons': { lsn, rows: 4, key: [4] } } },
      { lsn, tables: {}, snapshots: { 'dbo.Persons': { lsn, rows: 8, key: [8] } } },
      { lsn, tables: { 'dbo.Persons': lsn } },
    ]);
    // Each checkpoint follows exactly the rows it covers.
    expect(seen.map((e) => (e.type === 'checkpoint' ? 'cp' : (e.data as { Id: number }).Id))).toEqual(['cp', 1, 2, 3, 4, 'cp', 5, 6, 7, 8, 'cp', 9, 10, 'cp']);
  });

  it('a snapshot stopped in the middle resumes after the last checkpointed key: no row lost, duplicates only after the stored position, with the same MessageIds', async () => {
    const m = await serve();
    persons(m, 1, 10);
    const opts: Opts = { snapshot: true, start: 'latest', tables: ['Persons', 'Customers'], snapshotChunkRows: 3 };
    const first = await readThenStop(reader(m, opts).stream, 5);
    const stored = cps(first).at(-1)!;
    expect(stored.snapshots?.['dbo.Persons']).toMatchObject({ rows: 3, key: [3] });
    // Changed while dstream was down: a row before the stored key and one after it.
    m.commit([{ table: 'Persons', op: 'update', row: { Id: 2, Name: 'changed' } }]);
    m.commit([{ table: 'Persons', op: 'insert', row: { Id: 11, Name: 'new' } }]);
    const logs: string[] = [];
    const second = await readUntil(reader(m, { ...opts, after: stored }, logs).stream, (es) => rowsOf(es).some((e) => e.metadata!.OperationType === 'Update'));
    const reads = readOnly(second);
    expect(reads.map((e) => (e.data as { Id: number }).Id)).toEqual([4, 5, 6, 7, 8, 9, 10, 11]);
    // The same snapshot: the same LSN and row numbers, so a row sent before the stop has the same MessageId.
    const ids = (es: Envelope[]) => new Map(es.map((e) => [(e.data as { Id: number }).Id, messageIdOf('Persons_cdc_events', e)]));
    const before = ids(readOnly(first));
    const after = ids(reads);
    expect([...before.keys()]).toEqual([1, 2, 3, 4, 5]);
    expect(after.get(4)).toBe(before.get(4));
    expect(after.get(5)).toBe(before.get(5));
    expect(reads[0]!.metadata!.LSN).toBe(stored.snapshots!['dbo.Persons']!.lsn);
    // The change to a row already read arrives as the change it is, after the snapshot.
    expect(rowsOf(second).at(-1)!.data).toMatchObject({ Id: 2, Name: 'changed' });
    expect(logs.join('\n')).toMatch(/dbo\.Persons: resuming the snapshot at LSN 0x[0-9A-F]{20} after key \[3\] \(3 rows read\)/);
    // Customers (empty) and Persons both finished: one position for both.
    expect(cps(second).at(-1)!.snapshots).toBeUndefined();
  });

  it('resumes a composite primary key in key order, (k1, k2) > (v1, v2)', async () => {
    const m = shopModel();
    m.createTable('dbo.Lines', [{ name: 'Region', type: 'nvarchar', nullable: false }, { name: 'LineNo', type: 'int', nullable: false }, { name: 'Qty', type: 'int' }], ['Region', 'LineNo']);
    m.enableTable('dbo.Lines');
    const keys: Array<[string, number]> = [];
    for (const region of ['east', 'north', 'west']) for (let n = 1; n <= 3; n++) keys.push([region, n]);
    // Committed out of key order: the snapshot still reads in key order.
    for (const [region, n] of [...keys].reverse()) m.commit([{ table: 'Lines', op: 'insert', row: { Region: region, LineNo: n, Qty: n } }]);
    await serve(m);
    const opts: Opts = { snapshot: true, start: 'latest', tables: ['Lines'], snapshotChunkRows: 2 };
    const first = await readThenStop(reader(m, opts).stream, 5);
    const stored = cps(first).at(-1)!;
    expect(stored.snapshots?.['dbo.Lines']).toMatchObject({ rows: 4, key: ['north', 1] });
    const second = await readUntil(reader(m, { ...opts, after: stored }).stream, snapshotDone('dbo.Lines'));
    const keyOf = (e: Envelope) => { const d = e.data as { Region: string; LineNo: number }; return [d.Region, d.LineNo]; };
    expect(readOnly(first).map(keyOf)).toEqual(keys.slice(0, 5));
    expect(readOnly(second).map(keyOf)).toEqual(keys.slice(4));
    expect(readOnly(second).map((e) => e.metadata!.Seq)).toEqual([5, 6, 7, 8, 9].map((n) => `0x${n.toString(16).padStart(20, '0')}`));
    expect(cps(second).map((p) => p.snapshots?.['dbo.Lines']?.key ?? 'done')).toEqual([['north', 3], ['west', 2], 'done']);
  });

  it('a snapshot under way is kept by the SQL checkpoint store, and a worker taking the lease resumes it after its last key', async () => {
    const m = await serve();
    await createCheckpointTable(m);
    persons(m, 1, 10);
    const store = new SqlCheckpointStore(connector(m), 'dstream.checkpoints');
    const lease = { task: 'shop', checkpointTable: { schema: 'dstream', table: 'checkpoints' }, checkEveryMs: 1 };
    const opts: Opts = { lease, snapshot: true, start: 'latest', tables: ['Persons'], snapshotChunkRows: 3 };
    const a = reader(m, opts);
    const it = a.stream[Symbol.asyncIterator]();
    const first: Envelope[] = [];
    while (readOnly(first).length < 5) {
      const e = (await it.next()).value as Envelope;
      first.push(e);
      if (e.type === 'checkpoint') await store.save('shop', (e.data as { position: MssqlCdcPosition }).position, 'mssql-cdc');
    }
    await it.return?.();
    const stored = (await store.load('shop'))!.position as MssqlCdcPosition;
    expect(stored).toEqual(cps(first).at(-1));
    expect(stored.snapshots?.['dbo.Persons']).toMatchObject({ rows: 3, key: [3] });
    const b = reader(m, opts);
    const second = await readUntil(b.stream, snapshotDone('dbo.Persons'));
    await store.close();
    expect(readOnly(second).map((e) => (e.data as { Id: number }).Id)).toEqual([4, 5, 6, 7, 8, 9, 10]);
    expect(b.logs.join('\n')).toMatch(/lease on dbo\.Persons taken; reading from its snapshot under way/);
  });

  it('a connection lost during the initial snapshot: the reader reconnects and goes on after the last chunk, at the same LSN, tables not yet begun included', async () => {
    const m = await serve();
    persons(m, 1, 10);
    for (let i = 1; i <= 4; i++) m.commit([{ table: 'Customers', op: 'insert', row: { CustomerId: i, Company: `c${i}` } }]);
    // The connection goes as the second chunk of Persons is asked for.
    let chunks = 0;
    m.beforeStatement = (name) => {
      if (name === 'dbo.Persons' && ++chunks === 2) m.dropConnections();
    };
    const logs: string[] = [];
    const { stream } = reader(m, { snapshot: true, start: 'latest', tables: ['Persons', 'Customers'], snapshotChunkRows: 4 }, logs);
    const seen = await readUntil(stream, snapshotDone('dbo.Customers'));
    expect(logs.join('\n')).toMatch(/lost the connection .*reconnecting/);
    expect(logs.join('\n')).toMatch(/dbo\.Persons: resuming the snapshot at LSN 0x[0-9A-F]{20} after key \[4\] \(4 rows read\)/);
    const ids = (table: string) => readOnly(seen).filter((e) => e.metadata!.TableName === table).map((e) => (e.data as Record<string, number>)[table === 'Persons' ? 'Id' : 'CustomerId']);
    // Every row once: the rows of the first chunk were checkpointed, the second had not begun.
    expect(ids('Persons')).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(ids('Customers')).toEqual([1, 2, 3, 4]);
    // One snapshot: one LSN for every row, before and after the reconnect.
    const lsn = readOnly(seen)[0]!.metadata!.LSN;
    expect(new Set(readOnly(seen).map((e) => e.metadata!.LSN))).toEqual(new Set([lsn]));
    expect(cps(seen).at(-1)).toEqual({ lsn, tables: { 'dbo.Customers': lsn, 'dbo.Persons': lsn } });
  });

  it('a table without a primary key is read whole, with no checkpoint inside it (a stop re-reads it from the start)', async () => {
    const m = shopModel();
    m.createTable('dbo.Notes', [{ name: 'Body', type: 'nvarchar' }], []);
    m.enableTable('dbo.Notes');
    for (let i = 1; i <= 5; i++) m.commit([{ table: 'Notes', op: 'insert', row: { Body: `n${i}` } }]);
    await serve(m);
    const logs: string[] = [];
    const seen = await readUntil(reader(m, { snapshot: true, start: 'latest', tables: ['Notes'], snapshotChunkRows: 2 }, logs).stream, snapshotDone('dbo.Notes'));
    expect(seen.map((e) => e.type)).toEqual(['checkpoint', 'cdc', 'cdc', 'cdc', 'cdc', 'cdc', 'checkpoint']);
    const lsn = readOnly(seen)[0]!.metadata!.LSN;
    expect(cps(seen)).toEqual([{ lsn, tables: {}, snapshots: { 'dbo.Notes': { lsn, rows: 0, key: [] } } }, { lsn, tables: { 'dbo.Notes': lsn } }]);
    expect(logs.join('\n')).toMatch(/dbo\.Notes: no primary key: read whole, in no particular order, with no checkpoint inside it/);
  });

  it('reads positions without snapshots (as stored before), and rejects a snapshot position it cannot resume from', () => {
    const lsn = '0x0000002A000000010001';
    expect(readPosition({ lsn, tables: { 'dbo.Persons': lsn } }).snapshots.size).toBe(0);
    expect(readPosition({ lsn, tables: {}, snapshots: { 'dbo.Persons': { lsn, rows: 3, key: [3] } } }).snapshots.get('dbo.Persons')).toEqual({ lsn: lsnFromHex(lsn, 'x'), rows: 3, key: [3] });
    expect(() => readPosition({ lsn, tables: {}, snapshots: { 'dbo.Persons': { lsn, rows: -1, key: [3] } } })).toThrow(/snapshot position of dbo\.Persons/);
    expect(() => readPosition({ lsn, tables: {}, snapshots: { 'dbo.Persons': { lsn, rows: 3, key: 3 } } })).toThrow(/snapshot position of dbo\.Persons/);
    expect(() => readPosition({ lsn, tables: {}, snapshots: { 'dbo.Persons': { lsn, rows: 3, key: [] } } })).toThrow(/snapshot position of dbo\.Persons has no key/);
    expect(readPosition({ lsn, tables: {}, snapshots: { 'dbo.Persons': { lsn, rows: 0, key: [] } } }).snapshots.get('dbo.Persons')!.key).toEqual([]);
    // Binary key values survive the JSON round trip.
    const p = positionOf(new Map(), new Map([['dbo.Blobs', { lsn: lsnFromHex(lsn, 'x'), rows: 1, key: [Buffer.from([0, 255])] }]]));
    expect(readPosition(JSON.parse(JSON.stringify(p))).snapshots.get('dbo.Blobs')!.key).toEqual([Buffer.from([0, 255])]);
  });
});
