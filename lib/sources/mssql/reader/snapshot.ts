/** Snapshots: a table's current rows as Read envelopes, in chunks, each followed by a checkpoint. */
import type { Envelope } from '../../../envelope/types.js';
import { incrementLsn, lsnToHex } from '../lsn.js';
import { storedSnapshot } from '../position.js';
import { tableKey } from '../tables.js';
import { rowMapper, typeClassOf, type ColumnInfo } from '../types.js';
import type { CdcReader, TableState } from './core.js';

/**
 * Emits every current row of `tables` (OperationType Read) at one LSN, the max LSN when it
 * starts: a checkpoint first that says so (each table's snapshot under way from its start), then
 * each table in chunks of `snapshotChunkRows` rows in primary-key order, a checkpoint after each
 * chunk (the snapshot's LSN, the rows so far and the last key) and one when the table is done (its
 * LSN: streaming goes on after it). A table whose snapshot is under way resumes after its last
 * key, at its own snapshot's LSN and row count, so a row read again has the Seq (and MessageId) it
 * had. A table without a primary key is read whole, with no checkpoint inside it.
 */
export async function* snapshot(r: CdcReader, tables: TableState[], why: string): AsyncGenerator<Envelope> {
  let at: Buffer | null = null;
  if (tables.some((t) => !r.snapshots.has(t.key))) {
    at = await r.q.maxLsn();
    if (at === null) {
      r.log(`${why}: the capture process has recorded nothing yet; nothing to snapshot against, streaming from the start instead`);
      tables = tables.filter((t) => r.snapshots.has(t.key));
      if (tables.length === 0) return;
    }
  }
  // Until its snapshot is done, a table is read through no LSN: a checkpoint meanwhile leaves it
  // out, and says where its snapshot stands instead (from the start, for one not begun).
  for (const t of tables) r.emitted.delete(t.key);
  const begun = tables.filter((t) => !r.snapshots.has(t.key));
  for (const t of begun) r.snapshots.set(t.key, { lsn: at!, rows: 0, key: [] });
  if (begun.length > 0) yield r.checkpoint();
  const keys = new Map((await r.q.tableColumns()).map((c) => [tableKey(c), c.primaryKey]));
  const chunk = r.o.snapshotChunkRows;
  for (const t of tables) {
    const instance = t.instances[t.instances.length - 1]!;
    const map = rowMapper(instance.columns);
    const orderBy = keys.get(t.key) ?? [];
    const whole = wholeTableReason(orderBy, instance.columns);
    const under = r.snapshots.get(t.key)!;
    const lsnAt = under.lsn;
    const lsn = lsnToHex(lsnAt);
    if (under.rows > 0) {
      r.log(`${why}: ${t.key}: resuming the snapshot at LSN ${lsn} after key ${JSON.stringify(storedSnapshot(under).key)} (${under.rows} rows read)`);
    } else {
      r.log(`${why}: ${t.key} at LSN ${lsn}`);
      if (whole !== undefined) r.log(`${why}: ${t.key}: ${whole}: read whole, in no particular order, with no checkpoint inside it (a stop re-reads it from its start)`);
    }
    let n = under.rows;
    let after = under.key.length > 0 ? under.key : undefined;
    for (;;) {
      const rows = r.q.snapshot(t.ref, instance.columns, orderBy, whole === undefined ? { limit: chunk, ...(after !== undefined ? { after } : {}) } : undefined);
      let read = 0;
      let last: Record<string, unknown> | undefined;
      for await (const row of rows) {
        if (r.aborted) {
          rows.destroy();
          return;
        }
        n++;
        read++;
        last = row as Record<string, unknown>;
        yield {
          source: r.o.source,
          type: 'cdc',
          data: map(last),
          // Seq numbers the rows (in key order): with the LSN it makes each row's MessageId its own.
          metadata: r.metadata(t, instance, 'Read', 0, lsn, `0x${n.toString(16).toUpperCase().padStart(20, '0')}`, null),
        };
      }
      if (whole !== undefined || read < chunk) break;
      after = orderBy.map((k) => last![k]);
      r.snapshots.set(t.key, { lsn: lsnAt, rows: n, key: after });
      yield r.checkpoint();
    }
    r.log(`${why}: ${t.key}: ${n} rows`);
    r.snapshots.delete(t.key);
    t.from = incrementLsn(lsnAt);
    r.emitted.set(t.key, lsnAt);
    yield r.checkpoint();
  }
}

/**
 * Why a table's snapshot cannot be read in chunks after its last key, or undefined when it can: it
 * has no primary key, a key column is not captured (the row read does not carry it), or a key
 * column's type has no text form SQL Server compares in the key's own order.
 */
function wholeTableReason(primaryKey: readonly string[], captured: readonly ColumnInfo[]): string | undefined {
  if (primaryKey.length === 0) return 'no primary key';
  for (const k of primaryKey) {
    const c = captured.find((x) => x.name === k);
    if (c === undefined) return `its key column ${k} is not captured`;
    if (['variant', 'spatial', 'other'].includes(typeClassOf(c.type))) return `its key column ${k} is of type ${c.type}`;
  }
  return undefined;
}
