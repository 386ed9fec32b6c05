/**
 * The name of a table's lease: an application lock (sp_getapplock). SQL Server compares lock
 * resources byte for byte, whatever the database collation, and takes at most 255 characters, so
 * the name is folded to lower case (two spellings of one table, in a case-insensitive database,
 * take one lock) and a longer one keeps its first characters and a hash of the whole (two long
 * names that share 255 characters still take two locks).
 */
import { createHash } from 'node:crypto';
import { tableKey, type TableRef } from './tables.js';

export const LOCK_RESOURCE_MAX = 255;

export function leaseResource(task: string, ref: TableRef): string {
  const name = `dstream/${task}/${tableKey(ref)}`.toLowerCase();
  if (name.length <= LOCK_RESOURCE_MAX) return name;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 32);
  return `${name.slice(0, LOCK_RESOURCE_MAX - hash.length - 1)}#${hash}`;
}
