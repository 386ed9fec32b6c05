import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { checkpoint, decodeEnvelopes, entityNameProblem, ErrorCodes, planDestinations, route, type Envelope } from '../../lib/index.js';
import { bytes, collect, rechunk, text } from '../support/streams.js';

const row = (TableName: string, extra: Record<string, unknown> = {}): Envelope => ({
  source: 'mssql',
  type: 'cdc',
  data: { Id: 1 },
  metadata: { TableName, OperationType: 'Insert', ...extra },
});

const destinations = (out: Envelope[]) => out.map((e) => e.metadata?.Destination);

describe('route', () => {
  it('stamps {table}_cdc_events by default and passes checkpoints unchanged', async () => {
    const cp = checkpoint({ lsn: '0x10' }, 'mssql');
    const out = await collect<Envelope>(Readable.from([row('Persons'), cp, row('Orders')]).pipe(route()));
    expect(destinations(out)).toEqual(['Persons_cdc_events', undefined, 'Orders_cdc_events']);
    expect(out[1]).toEqual(cp);
  });

  it('fills {schema} (default dbo) and {database}', async () => {
    const r = route({ template: '{database}.{schema}.{table}' });
    const out = await collect<Envelope>(
      Readable.from([row('Persons', { Database: 'crm' }), row('Orders', { Database: 'crm', Schema: 'sales' })]).pipe(r),
    );
    expect(destinations(out)).toEqual(['crm.dbo.Persons', 'crm.sales.Orders']);
  });

  it('maps table names that break Service Bus rules, deterministically, and says so', async () => {
    const r = route();
    const events: unknown[] = [];
    r.on('destination', (a) => events.push(a));
    const out = await collect<Envelope>(Readable.from([row('Order Details'), row('Ünïcode$Tbl'), row('_staging'), row('Order Details')]).pipe(r));
    expect(destinations(out)).toEqual(['Order_Details_cdc_events', 'n_code_Tbl_cdc_events', 'staging_cdc_events', 'Order_Details_cdc_events']);
    for (const d of destinations(out)) expect(entityNameProblem(d as string)).toBeUndefined();
    expect(events).toHaveLength(3);
    expect(events[0]).toMatchObject({ destination: 'Order_Details_cdc_events', mapped: true });
  });

  it('keeps names up to 260 characters and shortens longer ones with a hash, keeping them distinct', () => {
    const a = 'A'.repeat(300);
    const b = `${'A'.repeat(299)}B`;
    const [da, db] = planDestinations([{ table: a }, { table: b }]).map((x) => x.destination);
    expect(da).toHaveLength(260);
    expect(db).toHaveLength(260);
    expect(da).not.toBe(db);
    expect(entityNameProblem(da!)).toBeUndefined();
    const exact = 'B'.repeat(260 - '_cdc_events'.length);
    expect(planDestinations([{ table: exact }])[0]!.destination).toBe(`${exact}_cdc_events`);
  });

  it('refuses two tables whose destinations differ only in case, naming both', async () => {
    const err = await collect(Readable.from([row('Persons'), row('PERSONS', { Schema: 'hr' })]).pipe(route())).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.DESTINATION_COLLISION);
    expect(err.message).toContain('dbo.Persons');
    expect(err.message).toContain('hr.PERSONS');
    expect(err.message).toMatch(/ignore case/);
  });

  it('refuses two tables that mapping makes equal', () => {
    expect(() => planDestinations([{ table: 'Order Details' }, { table: 'Order_Details' }])).toThrow(
      expect.objectContaining({ code: ErrorCodes.DESTINATION_COLLISION }),
    );
  });

  it('treats the same table in any letter case as one table', async () => {
    const out = await collect<Envelope>(Readable.from([row('Persons'), row('persons')]).pipe(route()));
    // One table, one queue: the first spelling seen names it.
    expect(destinations(out)).toEqual(['Persons_cdc_events', 'Persons_cdc_events']);
  });

  it('filters with include and exclude (names, schema.name, wildcards, any case)', async () => {
    const input = () => Readable.from([row('Persons'), row('Orders', { Schema: 'sales' }), row('AuditLog', { Schema: 'audit' }), row('Customers')]);
    const inc = await collect<Envelope>(input().pipe(route({ include: ['persons', 'sales.*'] })));
    expect(inc.map((e) => e.metadata?.TableName)).toEqual(['Persons', 'Orders']);
    const r = route({ exclude: ['audit.*', 'Cust*'] });
    const exc = await collect<Envelope>(input().pipe(r));
    expect(exc.map((e) => e.metadata?.TableName)).toEqual(['Persons', 'Orders']);
    expect(r.stats).toMatchObject({ routed: 2, filtered: 2 });
  });

  it('rejects bad templates at construction with a clear message', () => {
    expect(() => route({ template: '{tabel}_q' })).toThrow(/unknown placeholder \{tabel\}/);
    expect(() => route({ template: 'all_events' })).toThrow(/has no \{table\}/);
    expect(() => route({ template: '{table} events!' })).toThrow(expect.objectContaining({ code: ErrorCodes.INVALID_DESTINATION }));
  });

  it('applies the invalid-record policy to an envelope without a table, with its input line', async () => {
    const src = `${JSON.stringify(row('Persons'))}\n{"data":{"x":1},"metadata":{}}\n${JSON.stringify(row('Orders'))}\n`;
    const err = await collect(bytes([Buffer.from(src)]).pipe(decodeEnvelopes()).pipe(route())).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.INVALID_RECORD);
    expect(err.message).toMatch(/^line 2: envelope has no metadata.TableName/);

    const skip = route({ onInvalid: 'skip' });
    const out = await collect<Envelope>(bytes(rechunk(Buffer.from(src), 3)).pipe(decodeEnvelopes()).pipe(skip));
    expect(destinations(out)).toEqual(['Persons_cdc_events', 'Orders_cdc_events']);
    expect(skip.summary()).toMatch(/route: skipped 1 invalid record \(first: line 2: envelope has no metadata.TableName/);

    const dead = text();
    await collect(bytes([Buffer.from(src)]).pipe(decodeEnvelopes()).pipe(route({ onInvalid: 'dead-letter', deadLetter: dead })));
    const letter = JSON.parse(dead.text());
    expect(letter).toMatchObject({ stage: 'route', line: 2, raw: '{"data":{"x":1},"metadata":{}}' });
  });
});

describe('entityNameProblem', () => {
  it('follows the Service Bus entity name rules', () => {
    expect(entityNameProblem('Persons_cdc_events')).toBeUndefined();
    expect(entityNameProblem('a/b.c-d_e')).toBeUndefined();
    expect(entityNameProblem('x')).toBeUndefined();
    expect(entityNameProblem('')).toMatch(/empty/);
    expect(entityNameProblem('-a')).toMatch(/start and end/);
    expect(entityNameProblem('a.')).toMatch(/start and end/);
    expect(entityNameProblem('a b')).toMatch(/only letters/);
    expect(entityNameProblem('q'.repeat(261))).toMatch(/261 characters/);
    expect(entityNameProblem('q'.repeat(260))).toBeUndefined();
  });
});
