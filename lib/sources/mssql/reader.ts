/**
 * mssqlCdc(): SQL Server change data capture as a Readable of envelopes in commit order, with
 * checkpoint markers at transaction boundaries.
 *
 * Each poll reads one window of LSNs: from the position after the last checkpoint to the capture
 * process's max LSN, capped at `maxTransactions` commits (cdc.lsn_time_mapping) and at `maxRows`
 * rows per table, so a backlog of any size is read in bounded steps. Within a window, every table
 * with changes is streamed from its capture instance (its change table in clustered order, or the
 * change function: queryMode), and the streams are merged by (start LSN, command id, seqval,
 * operation): the order SQL Server committed them. Rows are pulled only as fast as the consumer
 * reads, so memory stays bounded by the driver's stream buffers, not by the window.
 */
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { DstreamError, ErrorCodes, invalidOption, isDstreamError, messageOf } from '../../errors.js';
import { retry } from '../../retry.js';
import { checkpoint, type Envelope } from '../../envelope/types.js';
import { didYouMean } from '../../config/schema.js';
import { isConnectionLost, missingCheckpointTable, sqlFailure } from './errors.js';
import { compareLsn, lsnFromHex, lsnToHex } from './lsn.js';
import type { CaptureInstance, CdcConnector, CdcQueries, DriverChangeRow, QueryMode, Transaction, WindowRows } from './queries.js';
import { parseTableRef, tableKey, type TableRef } from './tables.js';
import { enableDatabaseCall, enableTableCall } from './sql.js';
import { parsePosition, positionOf } from './position.js';
import { rowMapper, unavailableColumns } from './types.js';
import { leaseResource } from './lease.js';
import { resumeCheck } from './retention.js';
import { sqlServerConnector } from './sqlserver.js';

export const MSSQL_SOURCE = 'mssql-cdc';
export { parsePosition, positionOf, type MssqlCdcPosition } from './position.js';

export type GapPolicy = 'fail' | 'snapshot' | 'skip';

export interface LeaseOptions {
  /** Names the locks (`dstream/<task>/<schema.table>`) and the checkpoint rows. */
  task: string;
  /** Where a worker taking over a table reads that table's position. */
  checkpointTable: TableRef;
  /** How often a worker tries to take tables nobody holds. Default 5000. */
  checkEveryMs?: number;
  /** Most tables one worker holds, so N workers share the tables (ceil(tables / N)). Default: all. */
  maxTables?: number;
}

export interface MssqlCdcOptions {
  /** How to open connections; or give `connectionString`. */
  connect?: CdcConnector;
  /** SQL Server connection string (never logged), for the `mssql` driver. */
  connectionString?: string;
  /** `Persons` (schema dbo) or `sales.Orders`. */
  tables: string[];
  /** Where to start without a stored position: `latest` (default), `earliest`, or an LSN (inclusive). */
  start?: string;
  /** A stored position (from a checkpoint) to resume after. */
  after?: unknown;
  /** Emit the current rows of each table (OperationType Read) before streaming. Default false. */
  snapshot?: boolean;
  /** Also emit each update's before-image (OperationType UpdateBefore). Default false. */
  updateBefore?: boolean;
  onGap?: GapPolicy;
  /** Poll interval when changes keep coming. Default 500. */
  pollIntervalMs?: number;
  /** The idle back-off doubles up to this. Default 5000. */
  maxPollIntervalMs?: number;
  /** Commits per window. Default 10000. */
  maxTransactions?: number;
  /** Rows per table per window (a window ends at a commit boundary, so its last commit is whole). Default 10000. */
  maxRows?: number;
  /** `direct` (default): the change table in its clustered order, which orders a transaction's operations by __$command_id; `function`: cdc.fn_cdc_get_all_changes_<instance>. */
  queryMode?: QueryMode;
  /** How long a statement may take to its first row (0: no limit). Default: the connection string's Request Timeout, else 120000. */
  requestTimeoutMs?: number;
  /** A checkpoint at the first transaction boundary after this many rows. Default 1000. */
  checkpointEveryRows?: number;
  /** While idle, a checkpoint this often, so quiet tables keep up with retention. Default 10000. */
  heartbeatMs?: number;
  /** Attempts to connect at start-up. Default 5. */
  connectAttempts?: number;
  /** Attempts to reconnect after losing the connection while streaming. Default 20. */
  reconnectAttempts?: number;
  /** First back-off between attempts; doubles up to 30 s. Default 1000. */
  retryDelayMs?: number;
  /** Connections in the pool. Default 10; raised to 2 x tables + 1: each table with changes in a window streams at once, from two capture instances while it switches. */
  maxConnections?: number;
  /** Several workers per task: each table read by the one worker holding its lease. */
  lease?: LeaseOptions;
  source?: string;
  signal?: AbortSignal;
  log?: (message: string) => void;
}

const OPERATIONS: Record<number, string> = { 1: 'Delete', 2: 'Insert', 3: 'UpdateBefore', 4: 'Update' };
/** Envelopes handed on at once from a window's merge. */
const BATCH = 256;

/** The reader as a Readable (object mode) of change envelopes and checkpoints. */
export function mssqlCdc(options: MssqlCdcOptions): Readable {
  if ((options.connect === undefined) === (options.connectionString === undefined)) {
    throw invalidOption('mssqlCdc() needs exactly one of connectionString or connect');
  }
  const connect = options.connect ?? sqlServerConnector(options.connectionString!);
  // Destroying the stream must stop the reader even while it waits between polls, where the
  // generator is not at a yield and would not see return(): it watches this signal instead.
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  const reader = new CdcReader({ ...options, connect, signal });
  return generatorStream(reader.envelopes(), stop);
}

/** Readable.from(), except that destroying it aborts `stop` first, so a generator busy between yields ends. */
function generatorStream(gen: AsyncGenerator<Envelope | Envelope[]>, stop: AbortController): Readable {
  let pumping = false;
  return new Readable({
    objectMode: true,
    highWaterMark: 64,
    read() {
      if (pumping) return;
      pumping = true;
      void (async () => {
        try {
          for (;;) {
            const n = await gen.next();
            if (n.done) {
              this.push(null);
              return;
            }
            if (Array.isArray(n.value)) {
              let more = true;
              for (const e of n.value) more = this.push(e);
              if (!more) return;
            } else if (!this.push(n.value)) return;
          }
        } catch (err) {
          this.destroy(err as Error);
        } finally {
          pumping = false;
        }
      })();
    },
    destroy(err, callback) {
      stop.abort();
      gen.return(undefined).then(
        () => callback(err),
        (e: Error) => callback(err ?? e),
      );
    },
  });
}

interface TableState {
  ref: TableRef;
  key: string;
  /** Capture instances, oldest first. */
  instances: CaptureInstance[];
  /** The next LSN to read (inclusive). */
  from: Buffer;
  /** Where reading started, for a rewind before any checkpoint. */
  start: Buffer;
  /** The instance last read, to say when reading moves to a newer one. */
  reading?: string;
  /** False while no capture instance has a start LSN (NULL until the capture job sets it): skipped. */
  readable: boolean;
  /** An explicit `start` LSN, when reading began there: its time tells whether an instance existed before it. */
  startAt?: Buffer;
}

interface Segment {
  table: TableState;
  instance: CaptureInstance;
  from: Buffer;
  to: Buffer;
  /** Rows at or after this LSN belong to the newer instance. */
  before?: Buffer;
  map: (row: Record<string, unknown>) => Record<string, unknown>;
  /** Columns whose value CDC does not give in this row (LOBs in deletes and before-images). */
  unavailable: ((row: DriverChangeRow) => string[] | undefined) | undefined;
}

/** The lease session ended (its locks with it): stop reading leased tables and take them again. */
class LeaseLost extends Error {
  constructor() {
    super('the lease session ended');
  }
}

class CdcReader {
  private readonly o: Required<Omit<MssqlCdcOptions, 'after' | 'lease' | 'signal' | 'log' | 'start' | 'connectionString' | 'requestTimeoutMs'>> & MssqlCdcOptions;
  private readonly refs: TableRef[];
  private q!: CdcQueries;
  private lockSession: CdcQueries | undefined;
  private database = '';
  private readonly tables = new Map<string, TableState>();
  /** Per table, the LSN through which every change has been read (what the next checkpoint says). */
  private readonly emitted = new Map<string, Buffer>();
  /** Per table, the position of the last checkpoint handed on: where a reconnect resumes. */
  private readonly handed = new Map<string, Buffer>();
  private checkpointsHanded = 0;
  private lastCheckpointAt = 0;
  private lastLeaseCheck = 0;
  private standby = false;
  /** Set (synchronously) when the lease session's connection ends: checked before every hand-on. */
  private leaseLost = false;
  private leaseToken: object | undefined;
  /** Rows per table per window; shrinks while a window's first row keeps timing out. */
  private rowLimit: number;
  /** The next window's commits, asked for while a capped window is read (see transactionsFrom). */
  private ahead: { from: Promise<Buffer>; max: Buffer; txs: Promise<Transaction[]> } | undefined;
  private readonly log: (m: string) => void;

  constructor(options: MssqlCdcOptions) {
    if (!Array.isArray(options.tables) || options.tables.length === 0) throw invalidOption('mssql-cdc needs at least one table (tables = ["Persons", "sales.Orders"])');
    this.refs = options.tables.map(parseTableRef);
    const keys = this.refs.map(tableKey);
    const dup = keys.find((k, i) => keys.indexOf(k) !== i);
    if (dup !== undefined) throw invalidOption(`table ${dup} is listed twice`);
    const start = options.start ?? 'latest';
    if (start !== 'latest' && start !== 'earliest') lsnFromHex(start, 'start');
    if (options.onGap !== undefined && !['fail', 'snapshot', 'skip'].includes(options.onGap)) throw invalidOption(`on_gap must be fail, snapshot or skip; got ${JSON.stringify(options.onGap)}`);
    this.o = {
      start,
      snapshot: false,
      updateBefore: false,
      onGap: 'fail',
      pollIntervalMs: 500,
      maxPollIntervalMs: 5000,
      maxTransactions: 10_000,
      maxRows: 10_000,
      queryMode: 'direct',
      checkpointEveryRows: 1000,
      heartbeatMs: 10_000,
      connectAttempts: 5,
      reconnectAttempts: 20,
      retryDelayMs: 1000,
      maxConnections: 10,
      source: MSSQL_SOURCE,
      ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
    } as CdcReader['o'];
    if (!(this.o.maxTransactions >= 1)) throw invalidOption('maxTransactions must be at least 1');
    if (!(this.o.maxRows >= 1)) throw invalidOption('maxRows must be at least 1');
    if (this.o.queryMode !== 'direct' && this.o.queryMode !== 'function') throw invalidOption(`query_mode must be direct or function; got ${JSON.stringify(this.o.queryMode)}`);
    if (this.o.requestTimeoutMs !== undefined && !(this.o.requestTimeoutMs >= 0)) throw invalidOption('requestTimeoutMs must be 0 (no limit) or more');
    this.rowLimit = this.o.maxRows;
    this.log = options.log ?? (() => {});
  }

  private get aborted(): boolean {
    return this.o.signal?.aborted === true;
  }

  async *envelopes(): AsyncGenerator<Envelope | Envelope[]> {
    try {
      this.q = await this.connect(this.o.connectAttempts, 'start');
      try {
        yield* this.prepare();
      } catch (err) {
        throw sqlFailure(err, this.q.where, 'checking the database and tables');
      }
      // Consecutive failures without progress (a checkpoint handed on) between them.
      let failures = 0;
      let progressAt = this.checkpointsHanded;
      while (!this.aborted) {
        try {
          yield* this.stream();
          return;
        } catch (err) {
          const kind = this.aborted ? undefined : recoveryOf(err);
          if (kind === undefined) throw sqlFailure(err, this.q.where, 'reading changes');
          if (kind === 'timeout') this.narrowWindow(err as FirstRowTimeout);
          if (kind === 'connection' || kind === 'moved') {
            failures = this.checkpointsHanded > progressAt ? 1 : failures + 1;
            progressAt = this.checkpointsHanded;
            if (failures > this.o.reconnectAttempts) throw sqlFailure(err, this.q.where, `reading changes (gave up after ${this.o.reconnectAttempts} attempts without progress)`);
            if (failures > 1) {
              // Failing again right after recovering: back off before the next attempt.
              await sleep(Math.min(this.o.retryDelayMs * 2 ** (failures - 2), 30_000), undefined, { signal: this.o.signal }).catch(() => undefined);
            }
          }
          await this.recover(kind, err);
        }
      }
    } finally {
      await this.closeQuietly();
    }
  }

  /**
   * Back on track after a failure of `kind`: the one place that reconnects. Reading goes back to
   * the last checkpoint handed on; rows after it are read again (at least once).
   */
  private async recover(kind: Recovery, err: unknown): Promise<void> {
    switch (kind) {
      case 'moved':
        // 313: cleanup moved an instance's start between the gap check and the read; the next
        // window's gap check reports it properly.
        this.log(`the retained LSN range moved while reading (${messageOf(err)}); reading again from the last checkpoint`);
        break;
      case 'timeout':
        break;
      case 'lease':
        this.log(`the lease session ended (its locks went with it): stopped reading ${[...this.tables.keys()].join(', ')} at the last checkpoint; taking leases again`);
        await this.closeLeaseSession();
        break;
      case 'connection':
        this.log(`lost the connection to ${this.q.where} (${messageOf(err)}); reconnecting and resuming from the last checkpoint`);
        await this.closeQuietly();
        this.q = await this.connect(this.o.reconnectAttempts, 'reconnect');
        break;
    }
    if (this.o.lease && (kind === 'connection' || kind === 'lease')) {
      // The lease session is gone and every lock with it: leases are taken again from the stored positions.
      this.tables.clear();
      this.emitted.clear();
      this.handed.clear();
    }
    for (const [key, t] of this.tables) {
      const at = this.handed.get(key);
      if (at !== undefined) this.emitted.set(key, at);
      else this.emitted.delete(key);
      t.from = at !== undefined ? await this.q.incrementLsn(at) : t.start;
    }
  }

  /** A window's first row did not come in time (SQL Server sorts the range first): read smaller windows, down to one commit. */
  private narrowWindow(err: FirstRowTimeout): void {
    const limit = this.rowLimit;
    if (limit <= 1) {
      throw new DstreamError(
        ErrorCodes.SQL_TIMEOUT,
        `${err.table}: reading changes at ${this.q.where}: the first row did not come within the request timeout (${err.message}), even for a window of one commit; ` +
          `raise request_timeout_ms (0: no limit)${this.o.queryMode === 'function' ? ', or use query_mode = "direct", which reads the change table in its own order with no sort' : ''}`,
        { cause: err.cause, details: { table: err.table, requestTimeoutMs: this.o.requestTimeoutMs } },
      );
    }
    this.rowLimit = Math.max(1, Math.floor(limit / 4));
    this.log(`${err.table}: the first row of a window of up to ${limit} rows did not come within the request timeout (${err.message}); reading windows of up to ${this.rowLimit} rows`);
  }

  private async closeLeaseSession(): Promise<void> {
    const session = this.lockSession;
    this.lockSession = undefined;
    this.leaseToken = undefined;
    this.leaseLost = false;
    await session?.close().catch((err: unknown) => this.log(`closing the lease connection to ${session.where}: ${messageOf(err)}`));
  }

  private async closeQuietly(): Promise<void> {
    await this.q?.close().catch((err: unknown) => this.log(`closing the connection to ${this.q.where}: ${messageOf(err)}`));
    await this.closeLeaseSession();
  }

  private async connect(attempts: number, phase: 'start' | 'reconnect'): Promise<CdcQueries> {
    const failed = (err: unknown) => sqlFailure(err, (err as { where?: string }).where ?? 'the configured server', 'connecting');
    let lastFailure: DstreamError | undefined;
    return retry(
      // Every table with changes in a window streams at once, each on its own connection (two
      // while it switches capture instance); a pool smaller than that would leave the merge
      // waiting for a stream that waits for a connection.
      () => this.o.connect({ maxConnections: Math.max(this.o.maxConnections, 2 * this.refs.length + 1), ...(this.o.requestTimeoutMs !== undefined ? { requestTimeoutMs: this.o.requestTimeoutMs } : {}) }),
      {
        maxAttempts: attempts,
        baseMs: this.o.retryDelayMs,
        maxMs: 30_000,
        signal: this.o.signal,
        classify: (err) => isConnectionLost(err) && !this.aborted,
        onRetry: ({ attempt, delayMs, error }) => {
          lastFailure = failed(error);
          this.log(`${phase === 'start' ? 'connecting' : 'reconnecting'} (attempt ${attempt} of ${attempts}) failed: ${lastFailure.message}; retrying in ${delayMs} ms`);
        },
        fail: (err, attempt) => {
          const failure = failed(err);
          return new DstreamError(failure.code, `${failure.message}${isConnectionLost(err) ? ` (gave up after ${attempt} attempt${attempt === 1 ? '' : 's'})` : ''}`, { cause: err, details: failure.details });
        },
      },
    ).catch((err: unknown) => {
      // Stopped while waiting to retry: the connection failure is why there is nothing to read.
      throw this.aborted && lastFailure !== undefined && !isDstreamError(err) ? lastFailure : err;
    });
  }

  /** Checks the database and tables, resolves start positions, runs the snapshot if asked. */
  private async *prepare(): AsyncGenerator<Envelope> {
    const q = this.q;
    const info = await q.databaseInfo();
    this.database = info.database;
    if (!info.cdcEnabled) {
      throw new DstreamError(
        ErrorCodes.CDC_NOT_ENABLED,
        ['master', 'model', 'msdb', 'tempdb'].includes(info.database.toLowerCase())
          ? `connected to the system database ${info.database} (${q.where}): name the database with the tables in the connection string (Database=...)`
          : `CDC is not enabled on database ${info.database} (${q.where}). A sysadmin enables it with: ${enableDatabaseCall(info.database)}; ` +
            `or set enable_cdc = true in the input config and run \`dstream init\``,
        { details: { database: info.database } },
      );
    }
    await checkTables(q, this.refs);
    const agent = await q.agentState();
    if (agent === 'stopped') this.log(agentStoppedMessage(q.where));
    if (!this.o.lease) {
      const stored = this.o.after === undefined || this.o.after === null ? new Map<string, Buffer>() : parsePosition(this.o.after);
      const fresh: TableState[] = [];
      const all = await q.captureInstances();
      for (const ref of this.refs) {
        const at = stored.get(tableKey(ref));
        const state = await this.track(ref, at, all);
        if (at === undefined) fresh.push(state);
      }
      if (this.o.snapshot && fresh.length > 0) yield* this.snapshot(fresh, 'initial snapshot');
      else if (fresh.length > 0 && this.emitted.size > 0) yield this.checkpoint();
    }
  }

  /** Starts tracking a table (`all`: every capture instance): from its stored position, or from `start`. */
  private async track(ref: TableRef, after: Buffer | undefined, all: CaptureInstance[]): Promise<TableState> {
    const key = tableKey(ref);
    const instances = forTable(all, ref);
    let from: Buffer;
    if (after !== undefined) {
      from = await this.q.incrementLsn(after);
      this.emitted.set(key, after);
    } else if (this.o.start === 'earliest') {
      from = await this.q.minLsn(instances[0]!.name);
    } else if (this.o.start === 'latest') {
      const max = await this.q.maxLsn();
      if (max === null) from = await this.q.minLsn(instances[0]!.name);
      else {
        from = await this.q.incrementLsn(max);
        // Stored with the first checkpoint, so a restart keeps this start instead of moving to a new "latest".
        this.emitted.set(key, max);
      }
    } else {
      from = lsnFromHex(this.o.start!, 'start');
    }
    const state: TableState = { ref, key, instances, from, start: from, readable: true, ...(after === undefined && !['latest', 'earliest'].includes(this.o.start!) ? { startAt: from } : {}) };
    // Where a rewind before the first checkpoint goes back to: the stored position (or the start's).
    const at = this.emitted.get(key);
    if (at !== undefined) this.handed.set(key, at);
    this.tables.set(key, state);
    return state;
  }

  /** Emits every current row of `tables` (OperationType Read) at the max LSN, then a checkpoint there. */
  private async *snapshot(tables: TableState[], why: string): AsyncGenerator<Envelope> {
    const at = await this.q.maxLsn();
    if (at === null) {
      this.log(`${why}: the capture process has recorded nothing yet; nothing to snapshot against, streaming from the start instead`);
      return;
    }
    const lsn = lsnToHex(at);
    const keys = new Map((await this.q.tableColumns()).map((c) => [tableKey(c), c.primaryKey]));
    for (const t of tables) {
      const instance = t.instances[t.instances.length - 1]!;
      const map = rowMapper(instance.columns);
      const orderBy = keys.get(t.key) ?? [];
      this.log(`${why}: ${t.key} at LSN ${lsn}${orderBy.length === 0 ? ' (no primary key: rows in no particular order)' : ''}`);
      let n = 0;
      const rows = this.q.snapshot(t.ref, instance.columns, orderBy);
      for await (const row of rows) {
        if (this.aborted) {
          rows.destroy();
          return;
        }
        n++;
        yield {
          source: this.o.source,
          type: 'cdc',
          data: map(row as Record<string, unknown>),
          // Seq numbers the rows (in key order): with the LSN it makes each row's MessageId its own.
          metadata: this.metadata(t, instance, 'Read', 0, lsn, `0x${n.toString(16).toUpperCase().padStart(20, '0')}`, null),
        };
      }
      this.log(`${why}: ${t.key}: ${n} rows`);
      t.from = await this.q.incrementLsn(at);
      this.emitted.set(t.key, at);
    }
    yield this.checkpoint();
  }

  /** Metadata of one row; built whole and trimmed, which is cheaper than spreading per row. */
  private metadata(t: TableState, instance: CaptureInstance, op: string, opId: number, lsn: string, seq: string | null, commitTime: string | null): Record<string, unknown> {
    const m: Record<string, unknown> = {
      TableName: t.ref.table,
      Schema: t.ref.schema,
      Database: this.database,
      OperationType: op,
      OperationID: opId,
      LSN: lsn,
      Seq: seq,
      CommitTime: commitTime,
      CaptureInstance: instance.name,
    };
    if (seq === null) delete m.Seq;
    if (commitTime === null) delete m.CommitTime;
    return m;
  }

  /** A checkpoint of the current positions; `handOn` false when it waits in a batch not yet yielded. */
  private checkpoint(handOn = true): Envelope {
    this.lastCheckpointAt = Date.now();
    if (handOn) this.markHanded(this.emitted);
    return checkpoint(positionOf(this.emitted), this.o.source);
  }

  private markHanded(positions: ReadonlyMap<string, Buffer>): void {
    this.checkpointsHanded++;
    this.handed.clear();
    for (const [k, v] of positions) this.handed.set(k, v);
  }

  private async *stream(): AsyncGenerator<Envelope | Envelope[]> {
    let idle = 0;
    while (!this.aborted) {
      if (this.o.lease) yield* this.leases();
      const result = yield* this.window();
      if (this.aborted) return;
      if (result === 'full') {
        idle = 0;
        continue;
      }
      if (result === 'rows') idle = 0;
      else idle++;
      const wait = Math.min(this.o.pollIntervalMs * 2 ** Math.min(idle, 16), this.o.maxPollIntervalMs);
      await sleep(result === 'rows' ? this.o.pollIntervalMs : wait, undefined, { signal: this.o.signal }).catch(() => undefined);
    }
  }

  /** Reads one window. 'full': the window was capped (more is waiting); 'rows': some rows; 'idle': none. */
  private async *window(): AsyncGenerator<Envelope | Envelope[], 'full' | 'rows' | 'idle'> {
    const q = this.q;
    if (this.tables.size === 0) return 'idle';
    const max = await q.maxLsn();
    if (max === null) return 'idle';
    const all = await q.captureInstances();
    for (const t of this.tables.values()) {
      const instances = forTable(all, t.ref);
      if (instances.length === 0) {
        throw new DstreamError(ErrorCodes.CDC_NOT_ENABLED, `CDC was disabled on ${t.key} while dstream was reading it (no capture instance left); enable it again, then decide whether to re-read it (on_gap = "snapshot")`, { details: { table: t.key } });
      }
      t.instances = instances;
    }
    // Where each table resumes: from its position, or its instance's start when that came later;
    // tables whose cleanup overtook their position: fail, skip or snapshot (onGap).
    const gaps: TableState[] = [];
    for (const t of this.tables.values()) {
      const readable = t.instances.some((i) => i.startLsn !== null);
      if (!readable && t.readable) this.log(`${t.key}: its capture instance has no start LSN yet (the capture job has not established it); reading it once it has`);
      t.readable = readable;
      if (!readable || compareLsn(t.from, max) > 0) continue;
      const check = await resumeCheck(q, t.instances, t.from, this.emitted.get(t.key) ?? t.startAt);
      if (check.state === 'ok') t.from = check.from;
      else if (check.state === 'gap') {
        gaps.push(t);
        await this.gap(t, check.instance, check.min);
      }
    }
    if (gaps.length > 0 && this.o.onGap === 'snapshot') {
      yield* this.snapshot(gaps, 'on_gap = "snapshot"');
    }
    const active = [...this.tables.values()].filter((t) => t.readable);
    let low: Buffer | undefined;
    for (const t of active) if (low === undefined || compareLsn(t.from, low) < 0) low = t.from;
    if (low === undefined || compareLsn(low, max) > 0) {
      if (Date.now() - this.lastCheckpointAt >= this.o.heartbeatMs && this.emitted.size > 0) {
        const cp = this.checkpoint(false);
        await this.verify(this.emitted, []);
        yield cp;
      }
      return 'idle';
    }
    const txs = await this.transactionsFrom(low, max);
    let full = txs.length >= this.o.maxTransactions;
    let to = full ? txs[txs.length - 1]!.lsn : max;
    // Tables with changes, and where `rowLimit` rows of one of them end the window (a seek on the
    // change table's clustered index; idle tables open no stream).
    // The counts are sent all at once (one round trip, not one per table); the loop below takes a
    // count again only where `to` moved before it, so the window is the one counting in turn gives.
    const counted = new Map<string, Promise<WindowRows>>();
    const countOf = (s: Segment, end: Buffer) => `${s.instance.name} ${lsnToHex(s.from)} ${lsnToHex(end)}`;
    for (const t of active) {
      if (compareLsn(t.from, to) > 0) continue;
      for (const s of this.segmentsOf(t, to, txs)) {
        if (compareLsn(s.from, to) > 0) continue;
        const end = compareLsn(s.to, to) < 0 ? s.to : to;
        const n = q.windowRows(s.instance.name, s.from, end, this.rowLimit);
        n.catch(() => undefined);
        counted.set(countOf(s, end), n);
      }
    }
    const found: Segment[] = [];
    for (const t of active) {
      if (compareLsn(t.from, to) > 0) continue;
      for (const s of this.segmentsOf(t, to, txs)) {
        if (compareLsn(s.from, to) > 0) continue;
        const end = compareLsn(s.to, to) < 0 ? s.to : to;
        const n = await (counted.get(countOf(s, end)) ?? q.windowRows(s.instance.name, s.from, end, this.rowLimit));
        if (n.rows === 0) continue;
        if (n.rows >= this.rowLimit && n.last !== null && compareLsn(n.last, end) < 0) {
          to = n.last;
          full = true;
        }
        found.push(s);
      }
    }
    const segments: Segment[] = [];
    for (const s of found) {
      if (compareLsn(s.from, to) > 0) continue;
      const t = s.table;
      if (t.reading !== undefined && t.reading !== s.instance.name) {
        this.log(`${t.key}: switching from capture instance ${t.reading} to ${s.instance.name}, which starts at LSN ${lsnToHex(s.instance.startLsn!)}`);
      }
      t.reading = s.instance.name;
      segments.push(compareLsn(s.to, to) > 0 ? { ...s, to } : s);
    }
    // Where the next window starts, and (after a capped window: a backlog) its commits, asked for
    // now so they are there when this window ends.
    const nextLsn = q.incrementLsn(to);
    nextLsn.catch(() => undefined);
    if (full) {
      this.ahead = { from: nextLsn, max, txs: nextLsn.then((n) => q.transactions(n, max, this.o.maxTransactions)) };
      this.ahead.txs.catch(() => undefined);
    }
    const rows = yield* this.merge(segments, txs);
    // Stopped mid-window: the rest is read again next time; nothing past the last checkpoint counts.
    if (this.aborted) return 'idle';
    // Every table read through `to` (those ahead stay where they are): one checkpoint for the window.
    const next = await nextLsn;
    for (const t of active) {
      if (compareLsn(t.from, to) <= 0) {
        this.emitted.set(t.key, to);
        t.from = next;
      }
    }
    if (this.rowLimit < this.o.maxRows) this.rowLimit = Math.min(this.o.maxRows, this.rowLimit * 2);
    if (rows > 0 || Date.now() - this.lastCheckpointAt >= this.o.heartbeatMs) {
      const cp = this.checkpoint(false);
      await this.verify(this.emitted, segments);
      yield cp;
    }
    return full ? 'full' : rows > 0 ? 'rows' : 'idle';
  }

  /**
   * The first `maxTransactions` commits in [low, max]: the ones asked for ahead when they are the
   * same (read from the same LSN, and either up to the same max or already that many commits
   * before it), else asked now.
   */
  private async transactionsFrom(low: Buffer, max: Buffer): Promise<Transaction[]> {
    const limit = this.o.maxTransactions;
    const ahead = this.ahead;
    this.ahead = undefined;
    if (ahead !== undefined && compareLsn(ahead.max, max) <= 0) {
      const got = await Promise.all([ahead.from, ahead.txs]).catch(() => undefined);
      if (got !== undefined && got[0].equals(low) && (got[1].length >= limit || ahead.max.equals(max))) return got[1];
    }
    return this.q.transactions(low, max, limit);
  }

  /**
   * A checkpoint about to be handed on, once what it claims still holds: in lease mode, that this
   * worker's lease session is the one that took the locks (a pool replaces a dead connection
   * silently, and SQL Server has released its locks by then); in query mode direct, that cleanup
   * did not remove rows of the range while they were read (the change function would have failed
   * with 313; a SELECT on the change table just returns fewer rows).
   */
  private async verify(positions: ReadonlyMap<string, Buffer>, segments: readonly Segment[], cleanupCheck?: Promise<void>): Promise<void> {
    if (this.o.lease && this.tables.size > 0) {
      const session = this.lockSession;
      const first = this.tables.values().next().value!;
      if (this.leaseLost || session === undefined || !(await session.holdsLock(leaseResource(this.o.lease.task, first.ref))) || this.leaseLost) throw new LeaseLost();
    }
    await (cleanupCheck ?? this.cleanupCheck(segments));
    this.markHanded(positions);
  }

  /** Query mode direct: cleanup did not raise a segment's instance start past where it was read from (313 if it did). */
  private async cleanupCheck(segments: readonly Segment[]): Promise<void> {
    if (this.o.queryMode === 'direct') {
      const mins = await this.q.minLsns(segments.map((s) => s.instance.name));
      for (const [i, s] of segments.entries()) {
        const min = mins[i]!;
        if (compareLsn(min, s.from) > 0) {
          throw Object.assign(new Error(`cleanup raised the start of capture instance ${s.instance.name} to ${lsnToHex(min)} while ${lsnToHex(s.from)}.. was read`), { number: 313 });
        }
      }
    }
  }

  private async gap(t: TableState, instance: CaptureInstance, min: Buffer): Promise<void> {
    const stored = this.emitted.get(t.key);
    const what =
      `${t.key}: SQL Server's CDC cleanup has removed changes dstream had not read: the position is ${stored ? lsnToHex(stored) : `the start ${lsnToHex(t.from)}`}, ` +
      `but capture instance ${instance.name} now starts at ${lsnToHex(min)} (changes are kept for the cleanup job's retention, 3 days unless changed)`;
    if (this.o.onGap === 'fail') {
      throw new DstreamError(
        ErrorCodes.CDC_GAP,
        `${what}. Changes in between are lost to dstream. Choose how to go on: on_gap = "snapshot" re-reads the table's current rows and streams from there; ` +
          `on_gap = "skip" continues from ${lsnToHex(min)} accepting the loss; or \`dstream reset <task>\` starts over from \`start\`. ` +
          `To prevent it, keep dstream running or raise retention: EXEC sys.sp_cdc_change_job @job_type = N'cleanup', @retention = <minutes>`,
        { details: { table: t.key, position: stored ? lsnToHex(stored) : null, minLsn: lsnToHex(min), instance: instance.name } },
      );
    }
    if (this.o.onGap === 'skip') {
      this.log(`WARNING: ${what}. on_gap = "skip": continuing from ${lsnToHex(min)}; the changes in between are LOST`);
      t.from = min;
    } else {
      this.log(`${what}. on_gap = "snapshot": re-reading the table's current rows`);
    }
  }

  /**
   * The reads of one table in a window. With two capture instances (after a schema change), the
   * older is read up to the newer one's start LSN and the newer from there on.
   */
  private segmentsOf(t: TableState, to: Buffer, txs: Transaction[]): Segment[] {
    const out: Segment[] = [];
    const list = t.instances.filter((i): i is CaptureInstance & { startLsn: Buffer } => i.startLsn !== null);
    for (let i = 0; i < list.length; i++) {
      const instance = list[i]!;
      const next = list[i + 1];
      if (next !== undefined && compareLsn(t.from, next.startLsn) >= 0) continue; // already past it
      const from = compareLsn(t.from, instance.startLsn) >= 0 ? t.from : instance.startLsn;
      if (compareLsn(from, to) > 0) break;
      let end = to;
      if (next !== undefined && compareLsn(next.startLsn, to) <= 0) {
        // The last commit before the newer instance starts.
        let last: Buffer | undefined;
        for (const tx of txs) {
          if (compareLsn(tx.lsn, next.startLsn) >= 0) break;
          if (compareLsn(tx.lsn, from) >= 0) last = tx.lsn;
        }
        if (last === undefined) continue;
        end = last;
      }
      out.push({ table: t, instance, from, to: end, ...(next ? { before: next.startLsn } : {}), map: rowMapper(instance.columns), unavailable: unavailableColumns(instance.columns) });
    }
    return out;
  }

  /**
   * Streams the segments merged in commit order; checkpoints at transaction boundaries. Envelopes
   * leave in batches (up to BATCH, or whatever is ready before a wait for the driver), so the
   * per-item cost of an async generator is paid once per batch, not once per row.
   */
  private async *merge(segments: Segment[], txs: Transaction[]): AsyncGenerator<Envelope[], number> {
    if (segments.length === 0) return 0;
    const times = new Map<string, string | null>();
    for (const tx of txs) times.set(lsnToHex(tx.lsn), tx.commitTime);
    const read = { updateOld: this.o.updateBefore, mode: this.o.queryMode };
    const cursors = segments.map((s) => new RowCursor(this.q.changes(s.instance, s.from, s.to, read), s));
    const every = this.o.checkpointEveryRows;
    const source = this.o.source;
    let rows = 0;
    let sinceCheckpoint = 0;
    let prevLsn: Buffer | undefined;
    let prevHex = '';
    let commitTime: string | null = null;
    let batch: Envelope[] = [];
    // The positions of the last checkpoint in `batch`: handed on only once the batch is yielded.
    let batchPositions: Map<string, Buffer> | undefined;
    // Its cleanup check, sent when the checkpoint was made (every row it covers had been read by
    // then), so the merge goes on while the statement runs.
    let batchCleanupCheck: Promise<void> | undefined;
    const handOn = async () => {
      // Not one more row of a table whose lease is gone.
      if (this.leaseLost) throw new LeaseLost();
      if (batchPositions !== undefined) await this.verify(batchPositions, segments, batchCleanupCheck);
      batchPositions = undefined;
      batchCleanupCheck = undefined;
      const out = batch;
      batch = [];
      return out;
    };
    try {
      const heads: Array<DriverChangeRow | null> = await Promise.all(cursors.map((c) => c.next()));
      for (;;) {
        let best = -1;
        for (let i = 0; i < heads.length; i++) {
          const h = heads[i];
          if (h === null || h === undefined) continue;
          if (best < 0 || compareRows(h, heads[best]!) < 0) best = i;
        }
        if (best < 0) break;
        const row = heads[best]!;
        const c = cursors[best]!;
        let next = c.poll();
        if (next === undefined) {
          // The driver has nothing buffered for this table: hand over what is ready, then wait.
          if (batch.length > 0) {
            yield await handOn();
            if (this.aborted) return rows;
          }
          next = await c.next();
        }
        heads[best] = next;
        if (prevLsn === undefined || !prevLsn.equals(row.__$start_lsn)) {
          // A new commit begins: the previous one is complete.
          if (prevLsn !== undefined && sinceCheckpoint >= every) {
            this.advanceTo(prevLsn);
            batch.push(this.checkpoint(false));
            batchPositions = new Map(this.emitted);
            batchCleanupCheck = this.cleanupCheck(segments);
            // Awaited at hand-on; a failure before then must not go unhandled.
            batchCleanupCheck.catch(() => undefined);
            sinceCheckpoint = 0;
          }
          prevLsn = row.__$start_lsn;
          prevHex = lsnToHex(prevLsn);
          commitTime = times.get(prevHex) ?? null;
        }
        const s = c.segment;
        const op = row.__$operation;
        rows++;
        sinceCheckpoint++;
        const metadata = this.metadata(s.table, s.instance, OPERATIONS[op] ?? `Operation${op}`, op, prevHex, lsnToHex(row.__$seqval), commitTime);
        const unavailable = s.unavailable?.(row);
        if (unavailable !== undefined) metadata.UnavailableColumns = unavailable;
        batch.push({ source, type: 'cdc', data: s.map(row), metadata });
        if (batch.length >= BATCH) {
          yield await handOn();
          if (this.aborted) return rows;
        }
      }
      if (batch.length > 0) yield await handOn();
      return rows;
    } finally {
      for (const c of cursors) c.close();
    }
  }

  /** After a complete commit at `lsn`: every table at or before it has emitted through it. */
  private advanceTo(lsn: Buffer): void {
    for (const t of this.tables.values()) {
      const at = this.emitted.get(t.key);
      if (t.readable && compareLsn(t.from, lsn) <= 0 && (at === undefined || compareLsn(at, lsn) < 0)) this.emitted.set(t.key, lsn);
    }
  }

  /** Lease mode: keep the leases held, take free tables (with their stored positions), drop lost ones. */
  private async *leases(): AsyncGenerator<Envelope> {
    const lease = this.o.lease!;
    if (Date.now() - this.lastLeaseCheck < (lease.checkEveryMs ?? 5000) && this.lockSession !== undefined) return;
    this.lastLeaseCheck = Date.now();
    const resource = (ref: TableRef) => leaseResource(lease.task, ref);
    if (this.lockSession === undefined) {
      this.leaseLost = false;
      // Only this session's end counts (closing an old one on purpose ends it too).
      const token = {};
      this.leaseToken = token;
      this.lockSession = await this.o.connect({
        single: true,
        ...(this.o.requestTimeoutMs !== undefined ? { requestTimeoutMs: this.o.requestTimeoutMs } : {}),
        onSessionLost: () => {
          if (this.leaseToken === token) this.leaseLost = true;
        },
      });
      this.tables.clear();
      this.emitted.clear();
    }
    // A lost connection (this session or the reader's) propagates: the reader reconnects both,
    // and leases are taken again from the stored positions.
    const session = this.lockSession;
    for (const t of [...this.tables.values()]) {
      if (!(await session.holdsLock(resource(t.ref)))) {
        this.log(`lease on ${t.key} lost; another worker may take it`);
        this.tables.delete(t.key);
        this.emitted.delete(t.key);
      }
    }
    // Read once per round, and only when a table was taken.
    let taken: { stored: Map<string, Buffer>; all: CaptureInstance[] } | undefined;
    for (const ref of this.refs) {
      const key = tableKey(ref);
      if (this.tables.has(key)) continue;
      if (this.tables.size >= (lease.maxTables ?? Infinity)) break;
      if (!(await session.tryLock(resource(ref)))) continue;
      if (taken === undefined) {
        const rows = await this.q.loadCheckpoints(lease.checkpointTable, lease.task).catch((err: { number?: number }) => {
          throw err?.number === 208 ? missingCheckpointTable(lease.checkpointTable, this.q.where, err) : err;
        });
        taken = { stored: new Map(rows.flatMap((r) => (r.lsn ? [[r.table, r.lsn] as const] : []))), all: await this.q.captureInstances() };
      }
      const at = taken.stored.get(key);
      const state = await this.track(ref, at, taken.all);
      this.log(`lease on ${key} taken; reading from ${at ? `after the stored position ${lsnToHex(at)}` : `the start (${this.o.start})`}`);
      if (at === undefined && this.o.snapshot) yield* this.snapshot([state], 'initial snapshot');
    }
    const standby = this.tables.size === 0;
    if (standby && !this.standby) this.log(`standby: every table is leased by another worker; taking over when one is released`);
    this.standby = standby;
  }
}

/** Pulls rows from a driver stream without an await per row while rows are buffered. */
class RowCursor {
  private ended = false;
  private started = false;
  private error: unknown;
  private wake: (() => void) | undefined;

  constructor(
    private readonly stream: Readable,
    readonly segment: Segment,
  ) {
    const kick = () => {
      const w = this.wake;
      this.wake = undefined;
      w?.();
    };
    stream.on('readable', kick);
    stream.on('end', () => ((this.ended = true), kick()));
    stream.on('error', (err) => {
      // The driver's request timeout runs until the first row: SQL Server was still preparing it.
      this.error = !this.started && (err as { code?: string }).code === 'ETIMEOUT' ? new FirstRowTimeout(segment.table.key, err) : err;
      kick();
    });
    stream.on('close', () => {
      // Closed without 'end' or 'error' (its connection was closed): not a complete read.
      if (!this.ended && this.error === undefined) this.error = Object.assign(new Error('the change stream closed before its end'), { code: 'ECONNCLOSED' });
      kick();
    });
  }

  /** The next row if the driver has one buffered, null at the end, undefined when it must be waited for. */
  poll(): DriverChangeRow | null | undefined {
    const before = this.segment.before;
    for (;;) {
      if (this.error !== undefined) return undefined;
      const row = this.stream.read() as DriverChangeRow | null;
      if (row === null) return this.ended ? null : undefined;
      // Rows the newer capture instance also has are read from it.
      this.started = true;
      if (before !== undefined && compareLsn(row.__$start_lsn, before) >= 0) continue;
      return row;
    }
  }

  async next(): Promise<DriverChangeRow | null> {
    for (;;) {
      const row = this.poll();
      if (row !== undefined) return row;
      if (this.error !== undefined) throw this.error;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  close(): void {
    if (!this.ended) this.stream.destroy();
  }
}

/** The first row of a change read did not come within the request timeout. */
class FirstRowTimeout extends Error {
  constructor(
    readonly table: string,
    cause: unknown,
  ) {
    super(messageOf(cause), { cause });
  }
}

type Recovery = 'connection' | 'moved' | 'timeout' | 'lease';

/** How reading goes on after `err`, or undefined when it cannot. */
function recoveryOf(err: unknown): Recovery | undefined {
  if (err instanceof LeaseLost) return 'lease';
  if (err instanceof FirstRowTimeout) return 'timeout';
  if ((err as { number?: number }).number === 313) return 'moved';
  return isConnectionLost(err) ? 'connection' : undefined;
}

/**
 * Commit order: LSN, then __$command_id (the order of operations within a transaction, read in
 * query mode direct), then seqval and operation (all the change function gives).
 */
function compareRows(a: DriverChangeRow, b: DriverChangeRow): number {
  return Buffer.compare(a.__$start_lsn, b.__$start_lsn) || (a.__$command_id ?? 0) - (b.__$command_id ?? 0) || Buffer.compare(a.__$seqval, b.__$seqval) || a.__$operation - b.__$operation;
}

/** A table's capture instances, oldest first (one without a start LSN yet last). */
export function forTable(all: CaptureInstance[], ref: TableRef): CaptureInstance[] {
  const start = (i: CaptureInstance) => (i.startLsn === null ? 1 : 0);
  return all
    .filter((i) => i.schema === ref.schema && i.table === ref.table)
    .sort((a, b) => start(a) - start(b) || (a.startLsn && b.startLsn ? compareLsn(a.startLsn, b.startLsn) : 0) || (a.createDate < b.createDate ? -1 : 1));
}

export function agentStoppedMessage(where: string): string {
  return `SQL Server Agent is not running on ${where}: the CDC capture job is idle, so new changes do not reach the change tables until it runs. Start the SQL Server Agent service (in a container: MSSQL_AGENT_ENABLED=true)`;
}

/** A configured table that is not there, with the nearest name that is. */
export function tableNotFound(key: string, where: string, known: string[]): DstreamError {
  const guess = didYouMean(key, known) ?? known.find((k) => k.toLowerCase() === key.toLowerCase());
  return new DstreamError(ErrorCodes.TABLE_NOT_FOUND, `table ${key} does not exist in ${where}${guess ? `; did you mean ${guess}?` : ''} (tables are written Table, for schema dbo, or schema.Table)`, { details: { table: key } });
}

/** Every configured table exists and is tracked by CDC; otherwise an error with what to run. */
export async function checkTables(q: CdcQueries, refs: TableRef[]): Promise<void> {
  const tables = await q.sourceTables();
  const byKey = new Map(tables.map((t) => [tableKey(t), t]));
  for (const ref of refs) {
    const key = tableKey(ref);
    const t = byKey.get(key);
    if (t === undefined) throw tableNotFound(key, q.where, [...byKey.keys()]);
    if (!t.tracked) {
      throw new DstreamError(
        ErrorCodes.CDC_NOT_ENABLED,
        `CDC is not enabled on table ${key}. Enable it with: ${enableTableCall(ref)}; ` +
          `or set enable_cdc = true and run \`dstream init\``,
        { details: { table: key } },
      );
    }
  }
}
