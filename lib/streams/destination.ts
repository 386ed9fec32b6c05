/**
 * Destination names: a template rendered per table, mapped into the Azure Service Bus entity
 * name rules, with the case-insensitive collision check that Service Bus forces on us. `route()`
 * and the infrastructure code both use this, so a queue is named the same way everywhere.
 */
import { createHash } from 'node:crypto';
import { DstreamError, ErrorCodes, invalidOption } from '../errors.js';
import { displayTable, tableKey, tableOfMetadata, type TableRef } from '../envelope/table.js';

export const DEFAULT_TEMPLATE = '{table}_cdc_events';
export const MAX_ENTITY_NAME = 260;
const PLACEHOLDERS = ['table', 'schema', 'database'] as const;
type Placeholder = (typeof PLACEHOLDERS)[number];

export type { TableRef } from '../envelope/table.js';
export { displayTable, tableKey } from '../envelope/table.js';

/** Letters, digits, `.`, `-`, `_`, `/`; starts and ends with a letter or digit; 1-260 chars. */
const ENTITY_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9._\-/]{0,258}[A-Za-z0-9])?$/;
const NOT_ALLOWED_IN_VALUE = /[^A-Za-z0-9._-]+/g;

/** Why `name` is not a valid Service Bus queue name, or undefined. */
export function entityNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'is empty';
  if (name.length > MAX_ENTITY_NAME) return `is ${name.length} characters long; Service Bus allows ${MAX_ENTITY_NAME}`;
  if (/[^A-Za-z0-9._\-/]/.test(name)) return 'may contain only letters, digits, ".", "-", "_" and "/"';
  if (!ENTITY_NAME.test(name)) return 'must start and end with a letter or digit';
  return undefined;
}

type Part = string | { placeholder: Placeholder };

export class DestinationTemplate {
  readonly template: string;
  private readonly parts: Part[];

  constructor(template: string = DEFAULT_TEMPLATE) {
    if (typeof template !== 'string' || template.length === 0) throw invalidOption('template must be a non-empty string');
    this.template = template;
    this.parts = parseTemplate(template);
    if (!this.parts.some((p) => typeof p !== 'string' && p.placeholder === 'table')) {
      throw invalidOption(
        `template ${JSON.stringify(template)} has no {table}: every table would go to one destination`,
      );
    }
    const sample = this.renderUnmapped({ table: 'T', schema: 'dbo', database: 'db' });
    const problem = entityNameProblem(sample);
    if (problem !== undefined) {
      throw new DstreamError(
        ErrorCodes.INVALID_DESTINATION,
        `template ${JSON.stringify(template)} cannot produce a valid queue name: "${sample}" ${problem}`,
      );
    }
  }

  /** The destination for a table; table names that break the name rules are mapped, see `mapName`. */
  render(ref: TableRef): string {
    return mapName(this.renderWith(ref, mapValue));
  }

  /** The template filled in as is, before any mapping (to tell users when a name was changed). */
  renderUnmapped(ref: TableRef): string {
    return this.renderWith(ref, (v) => v);
  }

  private renderWith(ref: TableRef, map: (value: string) => string): string {
    let out = '';
    for (const p of this.parts) out += typeof p === 'string' ? p : map(valueOf(ref, p.placeholder));
    return out;
  }
}

function valueOf(ref: TableRef, p: Placeholder): string {
  if (p === 'table') return ref.table;
  if (p === 'schema') return ref.schema ?? 'dbo';
  return ref.database ?? '';
}

function parseTemplate(template: string): Part[] {
  const parts: Part[] = [];
  const re = /\{([^{}]*)\}/g;
  let last = 0;
  for (let m = re.exec(template); m !== null; m = re.exec(template)) {
    if (m.index > last) parts.push(template.slice(last, m.index));
    const name = m[1] as Placeholder;
    if (!PLACEHOLDERS.includes(name)) {
      throw invalidOption(
        `template ${JSON.stringify(template)} has an unknown placeholder {${m[1]}}; use ${PLACEHOLDERS.map((p) => `{${p}}`).join(', ')}`,
      );
    }
    parts.push({ placeholder: name });
    last = re.lastIndex;
  }
  if (last < template.length) parts.push(template.slice(last));
  return parts;
}

/** Characters Service Bus refuses in a placeholder value become `_` (a run of them, one `_`). */
function mapValue(value: string): string {
  return value.replace(NOT_ALLOWED_IN_VALUE, '_');
}

/**
 * Makes a rendered name valid, deterministically: leading and trailing characters that are not
 * letters or digits are dropped, and a name over 260 characters is cut to 251 and given `-` and
 * 8 hex digits of its SHA-1, so that long names stay distinct.
 */
export function mapName(name: string): string {
  let out = name.replace(/^[^A-Za-z0-9]+/, '').replace(/[^A-Za-z0-9]+$/, '');
  if (out.length > MAX_ENTITY_NAME) {
    const hash = createHash('sha1').update(name).digest('hex').slice(0, 8);
    out = `${out.slice(0, MAX_ENTITY_NAME - 9).replace(/[^A-Za-z0-9]+$/, '')}-${hash}`;
  }
  return out;
}

export interface Assignment {
  table: TableRef;
  destination: string;
  /** True when the table name had to be changed to fit the name rules. */
  mapped: boolean;
}

/**
 * Remembers which table owns which destination (compared ignoring case, as Service Bus does)
 * and refuses a second table for the same destination.
 */
export class DestinationRegistry {
  readonly template: DestinationTemplate;
  private readonly byTable = new Map<string, Assignment>();
  private readonly byDestination = new Map<string, TableRef>();

  constructor(template: string | DestinationTemplate = DEFAULT_TEMPLATE) {
    this.template = typeof template === 'string' ? new DestinationTemplate(template) : template;
  }

  /** The destination of a table; `isNew` is true the first time this table is seen. */
  assign(ref: TableRef): { assignment: Assignment; isNew: boolean } {
    const key = tableKey(ref);
    const known = this.byTable.get(key);
    if (known !== undefined) return { assignment: known, isNew: false };
    const destination = this.template.render(ref);
    const problem = entityNameProblem(destination);
    if (problem !== undefined) {
      throw new DstreamError(
        ErrorCodes.INVALID_DESTINATION,
        `table ${displayTable(ref)} maps to destination "${destination}", which ${problem}`,
        { details: { table: displayTable(ref), destination } },
      );
    }
    const folded = destination.toLowerCase();
    const owner = this.byDestination.get(folded);
    if (owner !== undefined) {
      throw new DstreamError(
        ErrorCodes.DESTINATION_COLLISION,
        `tables ${displayTable(owner)} and ${displayTable(ref)} both map to destination "${destination}" ` +
          '(Service Bus names ignore case); add {schema} or {database} to the template, or exclude one table',
        { details: { tables: [displayTable(owner), displayTable(ref)], destination } },
      );
    }
    const assignment: Assignment = { table: ref, destination, mapped: destination !== this.template.renderUnmapped(ref) };
    this.byTable.set(key, assignment);
    this.byDestination.set(folded, ref);
    return { assignment, isNew: true };
  }
}

/** Destinations for a known list of tables (planning), with the same rules and collision check as `route()`. */
export function planDestinations(tables: TableRef[], template: string = DEFAULT_TEMPLATE): Assignment[] {
  const registry = new DestinationRegistry(template);
  return tables.map((t) => registry.assign(t).assignment);
}

/**
 * A partition key for envelopes: `metadata.Destination` when present (stamped by `route()`),
 * else the template applied to the table, with the same rules and collision check.
 */
export function destinationKey(template: string = DEFAULT_TEMPLATE): (envelope: { metadata?: Record<string, unknown> }) => string | undefined {
  const registry = new DestinationRegistry(template);
  return (envelope) => {
    const m = envelope.metadata;
    if (typeof m?.Destination === 'string' && m.Destination.length > 0) return m.Destination;
    const table = tableOfMetadata(m);
    return table === undefined ? undefined : registry.assign(table).assignment.destination;
  };
}
