/** The position of mssql-cdc: one LSN per table, as checkpoints carry it and stores keep it. */
import { invalidOption } from '../../errors.js';
import { compareLsn, lsnFromHex, lsnToHex } from './lsn.js';

/** What a checkpoint carries: per table, the last LSN whose changes were all emitted. */
export interface MssqlCdcPosition {
  /** The lowest of the tables' LSNs. */
  lsn: string;
  tables: Record<string, string>;
}

/** Validates a stored position; a position of another source is an error that says so. */
export function parsePosition(value: unknown): Map<string, Buffer> {
  const p = value as Partial<MssqlCdcPosition> | null;
  if (p === null || typeof p !== 'object' || typeof p.tables !== 'object' || p.tables === null) {
    throw invalidOption(`the stored position is not an mssql-cdc position ({"lsn","tables"}): ${JSON.stringify(value)?.slice(0, 200)}; forget it with \`dstream reset <task>\``);
  }
  const out = new Map<string, Buffer>();
  for (const [table, lsn] of Object.entries(p.tables)) out.set(table, lsnFromHex(lsn, `stored position of ${table}`));
  return out;
}

export function positionOf(tables: ReadonlyMap<string, Buffer>): MssqlCdcPosition {
  const out: Record<string, string> = {};
  let low: Buffer | undefined;
  for (const [t, lsn] of [...tables].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    out[t] = lsnToHex(lsn);
    if (low === undefined || compareLsn(lsn, low) < 0) low = lsn;
  }
  return { lsn: low === undefined ? '' : lsnToHex(low), tables: out };
}
