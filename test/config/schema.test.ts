import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../lib/index.js';
import { validateConfig, type ConfigSchema } from '../../lib/provider/index.js';

const schema: ConfigSchema = {
  connection_string: { type: 'string', required: true, secret: true, env: 'ASB_CONNECTION_STRING' },
  template: { type: 'string', default: '{table}_cdc_events' },
  batch_size: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
  body: { type: 'string', enum: ['envelope', 'data'], default: 'envelope' },
  tables: { type: 'string[]' },
  verbose: { type: 'boolean', default: false },
};

describe('validateConfig', () => {
  it('fills defaults and keeps given values', () => {
    expect(validateConfig(schema, { connection_string: 'Endpoint=sb://x', tables: ['A'] })).toEqual({
      connection_string: 'Endpoint=sb://x',
      template: '{table}_cdc_events',
      batch_size: 100,
      body: 'envelope',
      tables: ['A'],
      verbose: false,
    });
  });

  it('reads env fallbacks', () => {
    expect(validateConfig(schema, {}, { env: { ASB_CONNECTION_STRING: 'Endpoint=sb://e' } }).connection_string).toBe('Endpoint=sb://e');
    // An empty variable is unset.
    expect(() => validateConfig(schema, {}, { env: { ASB_CONNECTION_STRING: '' } })).toThrow('config.connection_string: required (or set ASB_CONNECTION_STRING)');
  });

  it('lists every problem, naming the field, what was expected, and a did-you-mean for unknown keys', () => {
    let err: any;
    try {
      validateConfig(schema, { tempalte: 'x', batch_size: '10', body: 'row', verbose: 'yes', tables: 'A' });
    } catch (e) {
      err = e;
    }
    expect(err.code).toBe(ErrorCodes.CONFIG);
    expect(err.details.problems).toEqual([
      'config.tempalte: unknown key; did you mean "template"?',
      'config.connection_string: required (or set ASB_CONNECTION_STRING)',
      'config.batch_size: expected an integer, got string "10"',
      'config.body: expected one of "envelope", "data", got string "row"',
      'config.tables: expected a list of strings, got string "A"',
      'config.verbose: expected true or false, got string "yes"',
    ]);
  });

  it('checks ranges', () => {
    expect(() => validateConfig(schema, { connection_string: 'x', batch_size: 0 })).toThrow('config.batch_size: must be at least 1, got 0');
  });

  it('never echoes a secret value', () => {
    const secret = 'Endpoint=sb://ns/;SharedAccessKey=TOPSECRET';
    expect(() => validateConfig(schema, { connection_string: { key: secret } })).toThrow(/expected a string, got an object$/);
    const err = (() => {
      try {
        validateConfig(schema, { connection_string: [secret] });
      } catch (e) {
        return e as Error & { details: unknown };
      }
      throw new Error('validateConfig accepted a list as a string');
    })();
    expect(err.message).toBe('config.connection_string: expected a string, got a list');
    expect(JSON.stringify(err.details)).not.toContain('TOPSECRET');
  });
});
