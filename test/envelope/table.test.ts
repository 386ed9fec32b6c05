import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, partitionByTable, route, toFiles, type Envelope } from '../../lib/index.js';
import { desiredQueues } from '../../lib/infra/desired.js';
import { parseTable, tableKey } from '../../lib/envelope/table.js';
import { tableFilter } from '../../lib/streams/table-filter.js';
import { parseTableRef, tableKey as sourceKey } from '../../lib/sources/mssql/tables.js';
import { collect, memorySink } from '../support/streams.js';

const change = (schema: string, table: string, n = 1): Envelope => ({
  source: 'mssql',
  type: 'cdc',
  data: { Id: n },
  metadata: { Schema: schema, TableName: table, OperationType: 'Insert' },
});

describe('one table identity', () => {
  it('[my.schema].[Order Details] is planned and routed to the same queue', async () => {
    const template = '{schema}_{table}';
    const [planned] = desiredQueues(['[my.schema].[Order Details]'], template);
    const [routed] = await collect<Envelope>(Readable.from([change('my.schema', 'Order Details')]).pipe(route({ template })));
    expect(planned!.name).toBe('my.schema_Order_Details');
    expect(routed!.metadata!.Destination).toBe(planned!.name);
  });

  it('parses brackets, defaults the schema to dbo, and compares ignoring case', () => {
    expect(parseTable('[my.schema].[Order Details]')).toEqual({ schema: 'my.schema', table: 'Order Details' });
    expect(parseTable('[a]]b]')).toEqual({ schema: 'dbo', table: 'a]b' });
    expect(parseTable('Persons')).toEqual({ schema: 'dbo', table: 'Persons' });
    expect(tableKey({ table: 'ORDERS' })).toBe(tableKey({ schema: 'DBO', table: 'orders' }));
    expect(tableKey({ schema: 'sales', table: 'Orders' })).not.toBe(tableKey({ table: 'Orders' }));
    // The CDC reader reads the same names the same way.
    expect(parseTableRef('[my.schema].[Order Details]')).toEqual(parseTable('[my.schema].[Order Details]'));
    expect(sourceKey({ schema: 'sales', table: 'Orders' })).toBe('sales.Orders');
  });

  it('the table filter reads patterns as table names: brackets, schemas, wildcards', () => {
    const keep = tableFilter({ include: ['[my.schema].[Order*]', 'Persons'] });
    expect(keep('Order Details', 'my.schema')).toBe(true);
    expect(keep('Order Details', 'my')).toBe(false);
    expect(keep('persons', 'hr')).toBe(true);
    expect(keep('Orders', 'dbo')).toBe(false);
    expect(tableFilter({ exclude: ['sales.*'] })('Orders', 'SALES')).toBe(false);
  });

  it('partitionByTable keys on the table, schema included: dbo.Orders and sales.Orders get their own sinks', async () => {
    const sinks = new Map<string, ReturnType<typeof memorySink>>();
    const p = partitionByTable({ sinkFor: (d) => sinks.set(d, memorySink()).get(d)! });
    await pipeline(Readable.from([change('dbo', 'Orders', 1), change('sales', 'Orders', 2), change('DBO', 'orders', 3)]), p);
    expect([...sinks.keys()]).toEqual(['Orders', 'sales.Orders']);
    expect(sinks.get('Orders')!.items).toHaveLength(2);
    expect(sinks.get('sales.Orders')!.items).toHaveLength(1);
  });

  it('dbo.Orders and sales.Orders under a template without {schema}: a clear collision error', async () => {
    const out = toFiles({ dir: mkdtempSync(join(tmpdir(), 'dstream-identity-')), noSync: true });
    const err = await pipeline(Readable.from([change('dbo', 'Orders'), change('sales', 'Orders')]), out).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.DESTINATION_COLLISION);
    expect(err.message).toMatch(/tables dbo\.Orders and sales\.Orders both map to destination "Orders_cdc_events".*add \{schema\}/);
  });
});
