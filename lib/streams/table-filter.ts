import { invalidOption } from '../errors.js';
import { DEFAULT_SCHEMA, parseTable } from '../envelope/table.js';

/**
 * Include/exclude filter on table names. A pattern is a table name (`Persons`) or a qualified one
 * (`sales.Orders`, `[my.schema].[Order Details]`), parsed as table names are everywhere
 * (envelope/table.ts) and compared ignoring case as SQL Server's default collation does; `*`
 * matches any run of characters. An unqualified pattern matches the table in any schema.
 */
export interface TableFilterOptions {
  include?: string[];
  exclude?: string[];
}

export type TableFilter = (table: string, schema: string | undefined) => boolean;

export function tableFilter(options: TableFilterOptions = {}): TableFilter {
  const include = compile(options.include, 'include');
  const exclude = compile(options.exclude, 'exclude');
  if (include.length === 0 && exclude.length === 0) return () => true;
  return (table, schema) => {
    const t = table.toLowerCase();
    const s = (schema ?? DEFAULT_SCHEMA).toLowerCase();
    const hit = (p: Matcher): boolean => p.table.test(t) && (p.schema === undefined || p.schema.test(s));
    if (include.length > 0 && !include.some(hit)) return false;
    return !exclude.some(hit);
  };
}

interface Matcher {
  schema?: RegExp;
  table: RegExp;
}

const glob = (part: string): RegExp =>
  new RegExp(`^${part.toLowerCase().split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);

function compile(patterns: string[] | undefined, option: string): Matcher[] {
  if (patterns === undefined) return [];
  if (!Array.isArray(patterns)) throw invalidOption(`${option} must be a list of table names`);
  return patterns.map((raw) => {
    const p = typeof raw === 'string' ? raw.trim() : '';
    if (p.length === 0) throw invalidOption(`${option} has an empty table pattern`);
    const { schema, table } = parseTable(p);
    // parseTable puts an unqualified name in dbo; the filter lets it match any schema.
    const qualified = p.startsWith('[') ? /^\[(?:[^\]]|\]\])*\]\s*\./.test(p) : p.includes('.');
    return qualified ? { schema: glob(schema), table: glob(table) } : { table: glob(table) };
  });
}
