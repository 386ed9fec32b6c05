import { invalidOption } from '../errors.js';

/**
 * Include/exclude filter on table names. A pattern is a table name (`Persons`) or a qualified one
 * (`sales.Orders`), compared ignoring case as SQL Server's default collation does; `*` matches any
 * run of characters. An unqualified pattern matches the table in any schema.
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
    const bare = table.toLowerCase();
    const qualified = `${(schema ?? 'dbo').toLowerCase()}.${bare}`;
    const hit = (p: Matcher): boolean => p.test(p.qualified ? qualified : bare);
    if (include.length > 0 && !include.some(hit)) return false;
    return !exclude.some(hit);
  };
}

interface Matcher {
  qualified: boolean;
  test(name: string): boolean;
}

function compile(patterns: string[] | undefined, option: string): Matcher[] {
  if (patterns === undefined) return [];
  if (!Array.isArray(patterns)) throw invalidOption(`${option} must be a list of table names`);
  return patterns.map((raw) => {
    const p = typeof raw === 'string' ? raw.trim() : '';
    if (p.length === 0) throw invalidOption(`${option} has an empty table pattern`);
    const qualified = p.includes('.');
    const source = p
      .toLowerCase()
      .split('*')
      .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*');
    const re = new RegExp(`^${source}$`);
    return { qualified, test: (name: string) => re.test(name) };
  });
}
