/** The position of mssql-cdc: one LSN per table, as checkpoints carry it and stores keep it. */
import { invalidOption } from '../../errors.js';
import { compareLsn, lsnFromHex, lsnToHex } from './lsn.js';

/**
 * What a checkpoint carries: per table, the last LSN whose changes were all emitted; per table
 * whose snapshot is under way, where inside it the snapshot stopped. A table is in one of the two,
 * or in neither (not started: read from `start`, or snapshotted from the beginning).
 */
export interface MssqlCdcPosition {
  /** The lowest of the tables' (and snapshots') LSNs. */
  lsn: string;
  tables: Record<string, string>;
  /** Absent when no snapshot is under way (and in positions stored before snapshots were checkpointed). */
  snapshots?: Record<string, StoredSnapshot>;
}

/** A snapshot under way, as stored: JSON. */
export interface StoredSnapshot {
  /** The snapshot's LSN: every row of it carries this LSN, and streaming goes on after it. */
  lsn: string;
  /** Rows emitted so far: the next row's Seq is rows + 1. */
  rows: number;
  /** The primary-key values of the last row emitted, in key order; binary values as {"binary": "0x.."}. Empty: from the start. */
  key: unknown[];
}

/** A snapshot under way: where it resumes. */
export interface SnapshotProgress {
  lsn: Buffer;
  rows: number;
  /** The primary-key values of the last row emitted, as the driver gives them (Buffer for binary). */
  key: unknown[];
}

export interface ReadPosition {
  tables: Map<string, Buffer>;
  snapshots: Map<string, SnapshotProgress>;
}

const notAPosition = (value: unknown) =>
  invalidOption(`the stored position is not an mssql-cdc position ({"lsn","tables"}): ${JSON.stringify(value)?.slice(0, 200)}; forget it with \`dstream reset <task>\``);

/** Validates a stored position; a position of another source is an error that says so. */
export function readPosition(value: unknown): ReadPosition {
  const p = value as Partial<MssqlCdcPosition> | null;
  if (p === null || typeof p !== 'object' || typeof p.tables !== 'object' || p.tables === null) throw notAPosition(value);
  const tables = new Map<string, Buffer>();
  for (const [table, lsn] of Object.entries(p.tables)) tables.set(table, lsnFromHex(lsn, `stored position of ${table}`));
  const snapshots = new Map<string, SnapshotProgress>();
  if (p.snapshots !== undefined) {
    if (typeof p.snapshots !== 'object' || p.snapshots === null) throw notAPosition(value);
    for (const [table, s] of Object.entries(p.snapshots)) snapshots.set(table, readSnapshot(table, s));
  }
  return { tables, snapshots };
}

/** The tables' LSNs of a stored position (validated whole). */
export function parsePosition(value: unknown): Map<string, Buffer> {
  return readPosition(value).tables;
}

/** One table's snapshot under way, as stored (in a position, or a checkpoint table's position column). */
export function readSnapshot(table: string, value: unknown): SnapshotProgress {
  const s = value as Partial<StoredSnapshot> | null;
  const bad = (why: string) =>
    invalidOption(`the stored snapshot position of ${table} ${why}: ${JSON.stringify(value)?.slice(0, 200)}; forget it with \`dstream reset <task>\` (the table is snapshotted again)`);
  if (s === null || typeof s !== 'object') throw bad('is not {"lsn","rows","key"}');
  if (!Number.isSafeInteger(s.rows) || s.rows! < 0) throw bad('has no row count');
  if (!Array.isArray(s.key) || (s.key.length === 0 && s.rows !== 0)) throw bad('has no key');
  const key = s.key.map((v) => {
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v;
    const hex = (v as { binary?: unknown } | null)?.binary;
    if (typeof hex === 'string' && /^0x(?:[0-9A-Fa-f]{2})*$/.test(hex)) return Buffer.from(hex.slice(2), 'hex');
    throw bad('has a key value that is not a string, number, boolean or {"binary"}');
  });
  return { lsn: lsnFromHex(s.lsn as string, `stored snapshot position of ${table}`), rows: s.rows!, key };
}

/** One table's snapshot under way, as stored. */
export function storedSnapshot(s: SnapshotProgress): StoredSnapshot {
  return {
    lsn: lsnToHex(s.lsn),
    rows: s.rows,
    key: s.key.map((v) => (Buffer.isBuffer(v) || v instanceof Uint8Array ? { binary: `0x${Buffer.from(v).toString('hex').toUpperCase()}` } : v)),
  };
}

export function positionOf(tables: ReadonlyMap<string, Buffer>, snapshots?: ReadonlyMap<string, SnapshotProgress>): MssqlCdcPosition {
  const byName = <T>(m: ReadonlyMap<string, T>) => [...m].sort((a, b) => (a[0] < b[0] ? -1 : 1));
  const out: Record<string, string> = {};
  let low: Buffer | undefined;
  const lower = (lsn: Buffer) => {
    if (low === undefined || compareLsn(lsn, low) < 0) low = lsn;
  };
  for (const [t, lsn] of byName(tables)) {
    out[t] = lsnToHex(lsn);
    lower(lsn);
  }
  const position: MssqlCdcPosition = { lsn: '', tables: out };
  if (snapshots !== undefined && snapshots.size > 0) {
    position.snapshots = {};
    for (const [t, s] of byName(snapshots)) {
      position.snapshots[t] = storedSnapshot(s);
      lower(s.lsn);
    }
  }
  position.lsn = low === undefined ? '' : lsnToHex(low);
  return position;
}
