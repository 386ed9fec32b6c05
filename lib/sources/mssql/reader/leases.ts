/** Lease mode: several workers share a task, each table read by the worker holding its lock. */
import type { Envelope } from '../../../envelope/types.js';
import { messageOf } from '../../../errors.js';
import { missingCheckpointTable } from '../errors.js';
import { leaseResource } from '../lease.js';
import { lsnToHex } from '../lsn.js';
import { readSnapshot, type SnapshotProgress } from '../position.js';
import type { CaptureInstance } from '../queries.js';
import { tableKey, type TableRef } from '../tables.js';
import type { CdcReader } from './core.js';
import { snapshot } from './snapshot.js';
import { track } from './start.js';

export async function closeLeaseSession(r: CdcReader): Promise<void> {
  const session = r.lockSession;
  r.lockSession = undefined;
  r.leaseToken = undefined;
  r.leaseLost = false;
  await session?.close().catch((err: unknown) => r.log(`closing the lease connection to ${session.where}: ${messageOf(err)}`));
}

/** Lease mode: keep the leases held, take free tables (with their stored positions), drop lost ones. */
export async function* leases(r: CdcReader): AsyncGenerator<Envelope> {
  const lease = r.o.lease!;
  if (Date.now() - r.lastLeaseCheck < (lease.checkEveryMs ?? 5000) && r.lockSession !== undefined) return;
  r.lastLeaseCheck = Date.now();
  const resource = (ref: TableRef) => leaseResource(lease.task, ref);
  if (r.lockSession === undefined) {
    r.leaseLost = false;
    // Only this session's end counts (closing an old one on purpose ends it too).
    const token = {};
    r.leaseToken = token;
    r.lockSession = await r.o.connect({
      single: true,
      ...(r.o.requestTimeoutMs !== undefined ? { requestTimeoutMs: r.o.requestTimeoutMs } : {}),
      onSessionLost: () => {
        if (r.leaseToken !== token) return;
        r.leaseLost = true;
        r.report(true);
      },
    });
    r.tables.clear();
    r.emitted.clear();
    r.snapshots.clear();
  }
  // A lost connection (this session or the reader's) propagates: the reader reconnects both,
  // and leases are taken again from the stored positions.
  const session = r.lockSession;
  for (const t of [...r.tables.values()]) {
    if (!(await session.holdsLock(resource(t.ref)))) {
      r.log(`lease on ${t.key} lost; another worker may take it`);
      r.tables.delete(t.key);
      r.emitted.delete(t.key);
      r.snapshots.delete(t.key);
    }
  }
  // Read once per round, and only when a table was taken.
  let taken: { stored: Map<string, Buffer>; snapshots: Map<string, SnapshotProgress>; all: CaptureInstance[] } | undefined;
  for (const ref of r.refs) {
    const key = tableKey(ref);
    if (r.tables.has(key)) continue;
    if (r.tables.size >= (lease.maxTables ?? Infinity)) break;
    if (!(await session.tryLock(resource(ref)))) continue;
    if (taken === undefined) {
      const rows = await r.q.loadCheckpoints(lease.checkpointTable, lease.task).catch((err: { number?: number }) => {
        throw err?.number === 208 ? missingCheckpointTable(lease.checkpointTable, r.q.where, err) : err;
      });
      taken = {
        stored: new Map(rows.flatMap((r) => (r.lsn ? [[r.table, r.lsn] as const] : []))),
        // A table whose snapshot is under way: no LSN yet, its snapshot's position instead.
        snapshots: new Map(rows.flatMap((r) => (r.lsn === null && r.position !== null ? [[r.table, readSnapshot(r.table, JSON.parse(r.position))] as const] : []))),
        all: await r.q.captureInstances(),
      };
    }
    const at = taken.stored.get(key);
    const under = at === undefined ? taken.snapshots.get(key) : undefined;
    const state = await track(r, ref, at, taken.all);
    r.log(`lease on ${key} taken; reading from ${at ? `after the stored position ${lsnToHex(at)}` : under ? 'its snapshot under way' : `the start (${r.o.start})`}`);
    if (under !== undefined) r.snapshots.set(key, under);
    if (at === undefined && (r.o.snapshot || under !== undefined)) yield* snapshot(r, [state], 'initial snapshot');
  }
  const standby = r.tables.size === 0;
  if (standby && !r.standby) r.log(`standby: every table is leased by another worker; taking over when one is released`);
  r.standby = standby;
  r.report(true);
}
