/** Table names as users write them: `Persons` (schema dbo), `sales.Orders`, `[odd name].[x.y]`. */
import { invalidOption } from '../../errors.js';

export interface TableRef {
  schema: string;
  table: string;
}

/** `schema.table`, the key of a table in positions, leases and messages. */
export const tableKey = (t: TableRef): string => `${t.schema}.${t.table}`;

export function parseTableRef(text: string): TableRef {
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
  return parts.length === 1 ? { schema: 'dbo', table: parts[0]! } : { schema: parts[0]!, table: parts[1]! };
}

/** A T-SQL identifier in brackets, as QUOTENAME() makes it. */
export function quoteName(name: string): string {
  return `[${name.replace(/]/g, ']]')}]`;
}
