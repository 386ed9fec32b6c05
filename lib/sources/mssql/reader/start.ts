/** Start: the database and tables checked, each table's start position, the initial snapshot. */
import type { Envelope } from '../../../envelope/types.js';
import { didYouMean } from '../../../config/schema.js';
import { DstreamError, ErrorCodes } from '../../../errors.js';
import { compareLsn, incrementLsn, lsnFromHex } from '../lsn.js';
import { readPosition } from '../position.js';
import type { CaptureInstance, CdcQueries } from '../queries.js';
import { enableDatabaseCall, enableTableCall } from '../sql.js';
import { tableKey, type TableRef } from '../tables.js';
import type { CdcReader, TableState } from './core.js';
import { snapshot } from './snapshot.js';

/** Checks the database and tables, resolves start positions, runs the snapshot if asked. */
export async function* prepare(r: CdcReader): AsyncGenerator<Envelope> {
  const q = r.q;
  const info = await q.databaseInfo();
  r.database = info.database;
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
  await checkTables(q, r.refs);
  const agent = await q.agentState();
  if (agent === 'stopped') r.log(agentStoppedMessage(q.where));
  if (!r.o.lease) {
    const stored = r.o.after === undefined || r.o.after === null ? undefined : readPosition(r.o.after);
    const fresh: TableState[] = [];
    const all = await q.captureInstances();
    for (const ref of r.refs) {
      const key = tableKey(ref);
      const at = stored?.tables.get(key);
      const state = await track(r, ref, at, all);
      if (at !== undefined) continue;
      fresh.push(state);
      const under = stored?.snapshots.get(key);
      if (under !== undefined) r.snapshots.set(key, under);
    }
    // A snapshot under way is finished whatever `snapshot` says now: the table has no other position.
    const snapshotted = r.o.snapshot ? fresh : fresh.filter((t) => r.snapshots.has(t.key));
    if (snapshotted.length > 0) yield* snapshot(r, snapshotted, 'initial snapshot');
    else if (fresh.length > 0 && r.emitted.size > 0) yield r.checkpoint();
  }
}

/** Starts tracking a table (`all`: every capture instance): from its stored position, or from `start`. */
export async function track(r: CdcReader, ref: TableRef, after: Buffer | undefined, all: CaptureInstance[]): Promise<TableState> {
  const key = tableKey(ref);
  const instances = forTable(all, ref);
  let from: Buffer;
  if (after !== undefined) {
    from = incrementLsn(after);
    r.emitted.set(key, after);
  } else if (r.o.start === 'earliest') {
    from = await r.q.minLsn(instances[0]!.name);
  } else if (r.o.start === 'latest') {
    const max = await r.q.maxLsn();
    if (max === null) from = await r.q.minLsn(instances[0]!.name);
    else {
      from = incrementLsn(max);
      // Stored with the first checkpoint, so a restart keeps this start instead of moving to a new "latest".
      r.emitted.set(key, max);
    }
  } else {
    from = lsnFromHex(r.o.start!, 'start');
  }
  const state: TableState = { ref, key, instances, from, start: from, readable: true, ...(after === undefined && !['latest', 'earliest'].includes(r.o.start!) ? { startAt: from } : {}) };
  // Where a rewind before the first checkpoint goes back to: the stored position (or the start's).
  const at = r.emitted.get(key);
  if (at !== undefined) r.handed.set(key, at);
  r.tables.set(key, state);
  return state;
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
