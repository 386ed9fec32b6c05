/**
 * SqlCheckpointStore: task positions in a table of the source database, for deployments without
 * a persistent disk and for several workers sharing a task. An mssql-cdc position is stored one row
 * per table (so workers holding different tables never overwrite each other, and a table's LSN only
 * moves forward); any other position is one row with table_name '*'.
 */
import type { StateStore, StoreDescriptor, StoredState } from './state-store.js';
import { invalidOption } from '../errors.js';
import { retry } from '../retry.js';
import { isConnectionLost, missingCheckpointTable, sqlFailure } from '../sources/mssql/errors.js';
import { positionOf, readSnapshot, storedSnapshot } from '../sources/mssql/position.js';
import type { CdcConnector, CdcQueries } from '../sources/mssql/queries.js';
import { parseTableRef, tableKey, type TableRef } from '../sources/mssql/tables.js';

export const DEFAULT_CHECKPOINT_TABLE = 'dstream.checkpoints';
const WHOLE = '*';

export class SqlCheckpointStore implements StateStore {
  readonly table: TableRef;
  private q: Promise<CdcQueries> | undefined;

  constructor(
    private readonly connect: CdcConnector,
    table: string | TableRef = DEFAULT_CHECKPOINT_TABLE,
  ) {
    this.table = typeof table === 'string' ? parseTableRef(table) : table;
  }

  describe(): StoreDescriptor {
    return { kind: 'sqlserver', table: tableKey(this.table) };
  }

  /** Runs `fn` on the store's connection; a lost connection is opened again and `fn` retried (lib/retry.ts). */
  private async with<T>(what: string, fn: (q: CdcQueries) => Promise<T>): Promise<T> {
    let where: string | undefined;
    return retry(
      async () => {
        this.q ??= this.connect({ maxConnections: 2 });
        let q: CdcQueries | undefined;
        try {
          q = await this.q;
          where = q.where;
          return await fn(q);
        } catch (err) {
          if (isConnectionLost(err)) {
            this.q = undefined;
            // The connection is gone already; closing it is only tidying up.
            await q?.close().catch(() => undefined);
          }
          throw err;
        }
      },
      {
        maxAttempts: 3,
        baseMs: 500,
        maxMs: 5000,
        classify: (err) => isConnectionLost(err),
        fail: (err) => {
          if ((err as { number?: number }).number === 208) return missingCheckpointTable(this.table, where ?? 'the database', err);
          return sqlFailure(err, where ?? (err as { where?: string }).where ?? 'the checkpoint database', what);
        },
      },
    );
  }

  async load(task: string): Promise<StoredState | undefined> {
    const rows = await this.with(`reading the position of task "${task}" from ${tableKey(this.table)}`, (q) => q.loadCheckpoints(this.table, task));
    if (rows.length === 0) return undefined;
    const savedAt = rows.reduce((a, r) => ((r.savedAt ?? '') > a ? (r.savedAt ?? '') : a), '');
    const source = rows.find((r) => r.source !== null)?.source ?? undefined;
    const whole = rows.find((r) => r.table === WHOLE);
    if (whole !== undefined) {
      return { task, position: JSON.parse(whole.position ?? 'null') as unknown, ...(source ? { source } : {}), savedAt };
    }
    const tables = new Map(rows.flatMap((r) => (r.lsn === null ? [] : [[r.table, r.lsn] as const])));
    // A table whose snapshot is under way has no LSN yet: its row holds the snapshot's position.
    const snapshots = new Map(rows.flatMap((r) => (r.lsn === null && r.position !== null ? [[r.table, readSnapshot(r.table, JSON.parse(r.position))] as const] : [])));
    return { task, position: positionOf(tables, snapshots), ...(source ? { source } : {}), savedAt };
  }

  async save(task: string, position: unknown, source?: string): Promise<StoredState> {
    const p = position as { tables?: Record<string, string>; snapshots?: Record<string, unknown> } | null;
    let rows: Array<{ table: string; lsn: string | null; position: string | null; snapshotLsn?: string }>;
    if (p !== null && typeof p === 'object' && p.tables !== null && typeof p.tables === 'object') {
      rows = Object.entries(p.tables).map(([table, lsn]) => {
        if (typeof lsn !== 'string' || !/^0x[0-9A-Fa-f]{20}$/.test(lsn)) throw invalidOption(`checkpoint of ${table}: ${JSON.stringify(lsn)} is not an LSN`);
        return { table, lsn, position: null };
      });
      for (const [table, s] of Object.entries(p.snapshots ?? {})) {
        const stored = storedSnapshot(readSnapshot(table, s));
        rows.push({ table, lsn: null, position: JSON.stringify(stored), snapshotLsn: stored.lsn });
      }
    } else {
      rows = [{ table: WHOLE, lsn: null, position: JSON.stringify(position) }];
    }
    await this.with(`saving the position of task "${task}" to ${tableKey(this.table)}`, (q) => q.saveCheckpoints(this.table, task, source ?? null, rows));
    return { task, position, ...(source !== undefined ? { source } : {}), savedAt: new Date().toISOString() };
  }

  async reset(task: string): Promise<boolean> {
    return (await this.with(`forgetting the position of task "${task}"`, (q) => q.deleteCheckpoints(this.table, task))) > 0;
  }

  async close(): Promise<void> {
    const q = this.q;
    this.q = undefined;
    if (q) await (await q.catch(() => undefined))?.close();
  }
}
