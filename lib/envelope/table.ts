/**
 * Table identity, one way everywhere: how a name the user writes is parsed (`Persons`,
 * `sales.Orders`, `[my.schema].[Order Details]`), the key two names are compared by (case-folded,
 * as SQL Server's default collation and Service Bus names compare), and the form shown to people.
 * Used by route(), the table filter, desired queues, the partition key and the CDC reader.
 */
import { invalidOption } from '../errors.js';

export const DEFAULT_SCHEMA = 'dbo';

export interface TableRef {
  table: string;
  /** Default `dbo`. */
  schema?: string;
  database?: string;
}

/** A table with its schema resolved, as a source reads it. */
export interface QualifiedTable {
  schema: string;
  table: string;
}

/**
 * `Table` (schema dbo) or `schema.Table`; a part in brackets may hold dots and `]]` for `]`,
 * as T-SQL writes identifiers. `*` is an ordinary character here (the table filter uses it).
 */
export function parseTable(text: string): QualifiedTable {
  const parts: string[] = [];
  let i = 0;
  const s = typeof text === 'string' ? text.trim() : '';
  while (i < s.length) {
    let part = '';
    if (s[i] === '[') {
      i++;
      for (;;) {
        if (i >= s.length) throw invalidOption(`table ${JSON.stringify(text)}: unclosed [`);
        if (s[i] === ']') {
          if (s[i + 1] === ']') {
            part += ']';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        part += s[i++];
      }
    } else {
      while (i < s.length && s[i] !== '.') part += s[i++];
      part = part.trim();
    }
    parts.push(part);
    if (i < s.length) {
      if (s[i] !== '.') throw invalidOption(`table ${JSON.stringify(text)}: expected "." after ${JSON.stringify(part)}`);
      i++;
      if (i === s.length) parts.push('');
    }
  }
  if (parts.length === 0 || parts.length > 2 || parts.some((p) => p.length === 0)) {
    throw invalidOption(`table ${JSON.stringify(text)}: write it as Table or schema.Table (brackets for names with dots: [my.schema].[Table])`);
  }
  return parts.length === 1 ? { schema: DEFAULT_SCHEMA, table: parts[0]! } : { schema: parts[0]!, table: parts[1]! };
}

/** The table an envelope's metadata names, or undefined without a `TableName`. */
export function tableOfMetadata(m: { TableName?: unknown; Schema?: unknown; Database?: unknown } | undefined): TableRef | undefined {
  if (typeof m?.TableName !== 'string' || m.TableName.length === 0) return undefined;
  const ref: TableRef = { table: m.TableName };
  if (typeof m.Schema === 'string' && m.Schema.length > 0) ref.schema = m.Schema;
  if (typeof m.Database === 'string' && m.Database.length > 0) ref.database = m.Database;
  return ref;
}

/** The key two references to one table share: `database.schema.table`, case-folded. */
export function tableKey(ref: TableRef): string {
  return `${ref.database ?? ''}.${ref.schema ?? DEFAULT_SCHEMA}.${ref.table}`.toLowerCase();
}

/** `schema.table` as written (the key of a table in positions and leases). */
export function qualifiedName(ref: TableRef): string {
  return `${ref.schema ?? DEFAULT_SCHEMA}.${ref.table}`;
}

/** `schema.table` of an envelope's metadata (a metric label), '' when it names no table. */
export function tableLabel(env: { metadata?: { TableName?: unknown; Schema?: unknown } }): string {
  const ref = tableOfMetadata(env.metadata);
  return ref === undefined ? '' : qualifiedName(ref);
}

/** For people: `schema.table`, with the database in front when known. */
export function displayTable(ref: TableRef): string {
  const base = qualifiedName(ref);
  return ref.database ? `${ref.database}.${base}` : base;
}

/** A T-SQL identifier in brackets, as QUOTENAME() makes it. */
export function quoteName(name: string): string {
  return `[${name.replace(/]/g, ']]')}]`;
}
