import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import { checkpoint, createMetrics, envelopeProblem } from '../../lib/index.js';
import { READY } from '../../lib/protocol/messages.js';

const dir = fileURLToPath(new URL('../../lib/protocol/schemas/', import.meta.url));
const ajv = new Ajv2020({ strict: false, allErrors: true });
for (const f of readdirSync(dir)) ajv.addSchema(JSON.parse(readFileSync(dir + f, 'utf8')), f);
const check = (schema: string, value: unknown) => ajv.validate(schema, value);

describe('protocol JSON Schemas', () => {
  it('every schema compiles', () => {
    expect(readdirSync(dir).sort()).toEqual([
      'checkpoint.schema.json',
      'command-header.schema.json',
      'envelope.schema.json',
      'handshake.schema.json',
      'metrics.schema.json',
      'result.schema.json',
    ]);
    for (const f of readdirSync(dir)) expect(ajv.getSchema(f), f).toBeTypeOf('function');
  });

  it('the envelope schema and envelopeProblem() agree on valid and invalid envelopes', () => {
    const samples: unknown[] = [
      { source: 'mssql', type: 'cdc', data: { Id: 1 }, metadata: { TableName: 'Persons', LSN: '0x1' } },
      { data: null },
      { data: { legacy: 1 }, metadata: { TableName: 'X' } },
      checkpoint({ lsn: '0x2' }, 'mssql'),
      { type: 'checkpoint', data: {} },
      { type: 'checkpoint', data: 5 },
      { metadata: {} },
      { data: 1, metadata: [] },
      { data: 1, metadata: null },
      { data: 1, type: 3 },
      { data: 1, source: false },
      [1],
      'x',
      null,
    ];
    for (const s of samples) {
      const problem = envelopeProblem(s);
      expect(check('envelope.schema.json', s), `${JSON.stringify(s)}: code says ${problem ?? 'valid'}`).toBe(problem === undefined);
    }
  });

  it('the lines dstream writes match their schemas', () => {
    expect(check('handshake.schema.json', READY)).toBe(true);
    expect(check('handshake.schema.json', { status: 'error', message: 'config.x: unknown key' })).toBe(true);
    expect(check('handshake.schema.json', { status: 'error' })).toBe(false);
    expect(check('result.schema.json', { status: 'ok', command: 'plan', resources: [{ kind: 'queue', name: 'q', action: 'create' }] })).toBe(true);
    expect(check('result.schema.json', { status: 'error', command: 'plan' })).toBe(false);
    expect(check('result.schema.json', { status: 'ok', command: 'plan', resources: [{ kind: 'queue', name: 'q', action: 'explode' }] })).toBe(false);
    expect(check('command-header.schema.json', { command: 'init', config: {}, protocol: 1, streams: [{ name: 'Persons', keys: ['Id'] }] })).toBe(true);
    expect(check('command-header.schema.json', { command: 'migrate', config: {} })).toBe(false);
    expect(check('checkpoint.schema.json', checkpoint('0x00000027000001a80003'))).toBe(true);
  });

  it('a metrics line as runProvider() writes it matches its schema; it has the shape of an envelope, which is why a provider sends it only when asked', async () => {
    const m = await createMetrics();
    m.rowsDelivered.inc({ table: 'dbo.Persons', destination: 'Persons_cdc_events' }, 3);
    m.sendSeconds.observe({ destination: 'Persons_cdc_events' }, 0.01);
    const line = { type: 'metrics', data: { health: { sink: { ready: false, reason: 'retrying' } }, metrics: await m.registry.getMetricsAsJSON() } };
    expect(check('metrics.schema.json', line), JSON.stringify(ajv.errors)).toBe(true);
    expect(check('envelope.schema.json', line)).toBe(true);
    expect(check('metrics.schema.json', { type: 'metrics', data: { health: { sink: { reason: 'no ready' } } } })).toBe(false);
    expect(check('command-header.schema.json', { command: 'run', config: {}, protocol: 1, metrics: { interval_ms: 1000 } })).toBe(true);
    expect(check('command-header.schema.json', { command: 'run', config: {}, protocol: 1, metrics: { interval_ms: 0 } })).toBe(false);
  });
});
