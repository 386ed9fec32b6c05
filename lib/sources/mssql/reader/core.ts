/**
 * The reader's state and the pieces every part shares: its options, the tables it reads and their
 * positions, and the checkpoints it hands on. The parts (start, snapshot, windows, merge, leases,
 * recovery) are functions of this state, one file each.
 */
import type { Readable } from 'node:stream';
import { checkpoint, type Envelope } from '../../../envelope/types.js';
import { invalidOption } from '../../../errors.js';
import { lsnFromHex, lsnToHex, compareLsn } from '../lsn.js';
import { positionOf, type SnapshotProgress } from '../position.js';
import type { CaptureInstance, CdcQueries, ChangeRow, WindowCommits, WindowRows, WindowStart } from '../queries.js';
import type { ChangeLayout } from '../sql.js';
import { parseTableRef, tableKey, type TableRef } from '../tables.js';
import { leaseResource } from '../lease.js';
import type { MssqlCdcOptions, ReaderState } from './options.js';

export const MSSQL_SOURCE = 'mssql-cdc';

/** The lease session ended (its locks with it): stop reading leased tables and take them again. */
export class LeaseLost extends Error {
  constructor() {
    super('the lease session ended');
  }
}

export interface TableState {
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

export interface Segment {
  table: TableState;
  instance: CaptureInstance;
  from: Buffer;
  to: Buffer;
  /** Rows at or after this LSN belong to the newer instance. */
  before?: Buffer;
  /** Where the values are in its change rows (query mode and columns decide). */
  layout: ChangeLayout;
  /** A change row's `data`. */
  map: (row: ChangeRow) => Record<string, unknown>;
  /** Columns whose value CDC does not give in a row (LOBs in deletes and before-images), by its operation and update mask. */
  unavailable: ((op: number, mask: Uint8Array | null | undefined) => string[] | undefined) | undefined;
}

/** The next window's row counts, by range, and its change streams, by read, asked for while a window is read. */
export interface AheadReads {
  counted: Map<string, Promise<WindowRows>>;
  reads: Map<string, Readable>;
}

export class CdcReader {
  readonly o: Required<Omit<MssqlCdcOptions, 'after' | 'lease' | 'signal' | 'log' | 'onState' | 'start' | 'connectionString' | 'requestTimeoutMs'>> & MssqlCdcOptions;
  readonly refs: TableRef[];
  q!: CdcQueries;
  lockSession: CdcQueries | undefined;
  database = '';
  readonly tables = new Map<string, TableState>();
  /** Per table, the LSN through which every change has been read (what the next checkpoint says). */
  readonly emitted = new Map<string, Buffer>();
  /** Per table, the position of the last checkpoint handed on: where a reconnect resumes. */
  readonly handed = new Map<string, Buffer>();
  /** Tables whose snapshot is under way: where it goes on (no LSN of theirs is in `emitted` meanwhile). */
  snapshots = new Map<string, SnapshotProgress>();
  /** The snapshots under way as the last checkpoint handed on says. */
  readonly handedSnapshots = new Map<string, SnapshotProgress>();
  checkpointsHanded = 0;
  lastCheckpointAt = 0;
  lastLeaseCheck = 0;
  standby = false;
  /** Set (synchronously) when the lease session's connection ends: checked before every hand-on. */
  leaseLost = false;
  leaseToken: object | undefined;
  /** Rows per table per window; shrinks while a window's first row keeps timing out. */
  rowLimit: number;
  /** The next window's first questions (its capture instances and the max LSN), asked once a capped window's rows are read. */
  aheadStart: Promise<WindowStart> | undefined;
  /** The next window's commits, asked for while a capped window is read (see commitsFrom in windows.ts). */
  ahead: { from: Buffer; max: Buffer; commits: Promise<WindowCommits> } | undefined;
  /** And that window's row counts and change streams, asked for once its commits are known (see window() in windows.ts). */
  aheadRows: Promise<AheadReads> | undefined;
  /** The backlog as the windows see it (backlog.ts): at a window's start, its commits to the max LSN; 0 once read through it. */
  backlog: { commits: number; atLeast: boolean; at: number } | undefined;
  readonly log: (m: string) => void;
  /** The signal has aborted (see `aborted`). */
  private stopped = false;

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
      snapshotChunkRows: 10_000,
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
    if (!(Number.isSafeInteger(this.o.snapshotChunkRows) && this.o.snapshotChunkRows >= 1)) throw invalidOption('snapshot_chunk_rows must be a whole number, at least 1');
    if (this.o.queryMode !== 'direct' && this.o.queryMode !== 'function') throw invalidOption(`query_mode must be direct or function; got ${JSON.stringify(this.o.queryMode)}`);
    if (this.o.requestTimeoutMs !== undefined && !(this.o.requestTimeoutMs >= 0)) throw invalidOption('requestTimeoutMs must be 0 (no limit) or more');
    this.rowLimit = this.o.maxRows;
    this.log = options.log ?? (() => {});
    const signal = this.o.signal;
    if (signal?.aborted === true) this.stopped = true;
    else signal?.addEventListener('abort', () => (this.stopped = true), { once: true });
  }

  /**
   * Connections in the pool: every table with changes in a window streams at once, each on its own
   * connection (two while it switches capture instance); a pool smaller than that would leave the
   * merge waiting for a stream that waits for a connection.
   */
  get poolSize(): number {
    return Math.max(this.o.maxConnections, 2 * this.refs.length + 1);
  }

  /** The windows' view of the backlog (backlog.ts): a window about to read `commits`, or 0 once read through the max LSN. */
  sawBacklog(commits: number): void {
    this.backlog = { commits, atLeast: commits >= this.o.maxTransactions, at: Date.now() };
  }

  /** Tells onState where the reader stands (`recovering`: going back to its last checkpoint, and why). */
  report(connected: boolean, recovering?: ReaderState['recovering']): void {
    const leases = this.o.lease ? (recovering === 'lease' || this.leaseLost ? [] : [...this.tables.keys()]) : undefined;
    this.o.onState?.({ connected, standby: this.standby, ...(leases ? { leases } : {}), ...(recovering ? { recovering } : {}) });
  }

  /**
   * Stopped: the signal aborted. Read on every row's path (merge, windows), so it is a field of the
   * reader's own, set by the signal's 'abort' event, and not the signal's getter: in Node 20 every
   * AbortSignal has a hidden class of its own, so code that reads one signal's `aborted` is
   * deoptimized when it meets the next (measured: each new reader recompiled the window, merge and
   * envelope functions, 200-300 ms of compiling per reader on a two-core machine).
   */
  get aborted(): boolean {
    return this.stopped;
  }

  /**
   * Metadata of one row, allocated whole in its final shape: one literal per combination of the
   * fields that may be absent (deleting a property from a literal would turn the object into a
   * dictionary, slower to build and to serialize).
   */
  metadata(t: TableState, instance: CaptureInstance, op: string, opId: number, lsn: string, seq: string | null, commitTime: string | null): Record<string, unknown> {
    const table = t.ref.table;
    const schema = t.ref.schema;
    const database = this.database;
    const name = instance.name;
    if (seq !== null) {
      if (commitTime !== null) return { TableName: table, Schema: schema, Database: database, OperationType: op, OperationID: opId, LSN: lsn, Seq: seq, CommitTime: commitTime, CaptureInstance: name };
      return { TableName: table, Schema: schema, Database: database, OperationType: op, OperationID: opId, LSN: lsn, Seq: seq, CaptureInstance: name };
    }
    if (commitTime !== null) return { TableName: table, Schema: schema, Database: database, OperationType: op, OperationID: opId, LSN: lsn, CommitTime: commitTime, CaptureInstance: name };
    return { TableName: table, Schema: schema, Database: database, OperationType: op, OperationID: opId, LSN: lsn, CaptureInstance: name };
  }

  /** A checkpoint of the current positions; `handOn` false when it waits in a batch not yet yielded. */
  checkpoint(handOn = true): Envelope {
    this.lastCheckpointAt = Date.now();
    if (handOn) this.markHanded(this.emitted);
    return checkpoint(positionOf(this.emitted, this.snapshots), this.o.source);
  }

  markHanded(positions: ReadonlyMap<string, Buffer>): void {
    this.checkpointsHanded++;
    this.handed.clear();
    for (const [k, v] of positions) this.handed.set(k, v);
    this.handedSnapshots.clear();
    for (const [k, v] of this.snapshots) this.handedSnapshots.set(k, v);
  }

  /**
   * A checkpoint about to be handed on, once `checked` (a check() started after every row it
   * covers was read; one is started now when none is given) has answered.
   */
  async verify(positions: ReadonlyMap<string, Buffer>, segments: readonly Segment[], checked?: Promise<void>): Promise<void> {
    await (checked ?? this.check(segments));
    // The session may have ended after the check answered.
    if (this.o.lease && this.leaseLost) throw new LeaseLost();
    this.markHanded(positions);
  }

  /**
   * What a checkpoint claims, checked against the server: in lease mode, that this worker's lease
   * session is the one that took the locks (a pool replaces a dead connection silently, and SQL
   * Server has released its locks by then); in query mode direct, that cleanup did not remove rows
   * of the range while they were read (the change function would have failed with 313; a SELECT on
   * the change table just returns fewer rows).
   *
   * Both answers hold for every row read before the check was sent, whenever it answers, so a
   * check started after a checkpoint's rows were read proves that checkpoint (merge.ts relies on
   * it): cleanup only ever raises an instance's start, and a session never gets a lost lock back
   * while a window is read (locks are taken in leases(), between windows, and a lost session drops
   * its tables first), so a lock held now was held all along since it was taken.
   */
  async check(segments: readonly Segment[]): Promise<void> {
    // Both at once (the lease has its own connection); a lost lease is the answer that counts.
    const cleanup = this.cleanupCheck(segments);
    cleanup.catch(() => undefined);
    if (this.o.lease && this.tables.size > 0) await this.holdsLease();
    await cleanup;
  }

  private async holdsLease(): Promise<void> {
    const session = this.lockSession;
    const first = this.tables.values().next().value!;
    if (this.leaseLost || session === undefined || !(await session.holdsLock(leaseResource(this.o.lease!.task, first.ref))) || this.leaseLost) throw new LeaseLost();
  }

  /** Query mode direct: cleanup did not raise a segment's instance start past where it was read from (313 if it did). */
  async cleanupCheck(segments: readonly Segment[]): Promise<void> {
    if (this.o.queryMode !== 'direct') return;
    const mins = await this.q.minLsns(segments.map((s) => s.instance.name));
    for (const [i, s] of segments.entries()) {
      const min = mins[i]!;
      if (compareLsn(min, s.from) > 0) {
        throw Object.assign(new Error(`cleanup raised the start of capture instance ${s.instance.name} to ${lsnToHex(min)} while ${lsnToHex(s.from)}.. was read`), { number: 313 });
      }
    }
  }
}
