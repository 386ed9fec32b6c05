import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Logger, redact, secretValues } from '../lib/log.js';

describe('redact', () => {
  it('masks the secret parts of connection strings and URLs, and given values', () => {
    expect(redact('Server=db;User Id=sa;Password=p@ss;word!;Encrypt=true')).toBe('Server=db;User Id=sa;Password=***;word!;Encrypt=true');
    expect(redact('server=db;pwd="a;b"')).toBe('server=db;pwd=***');
    expect(redact('Endpoint=sb://ns/;SharedAccessKeyName=send;SharedAccessKey=abc+/=')).toBe('Endpoint=sb://ns/;SharedAccessKeyName=send;SharedAccessKey=***');
    expect(redact('DefaultEndpointsProtocol=https;AccountName=a;AccountKey=xyz==;')).toBe('DefaultEndpointsProtocol=https;AccountName=a;AccountKey=***;');
    expect(redact('mssql://sa:hunter2@db:1433/app')).toBe('mssql://sa:***@db:1433/app');
    expect(redact('token abcdef and abcdef', ['abcdef'])).toBe('token *** and ***');
    expect(redact('{"cs":"Endpoint=sb://x/;SharedAccessKey=a\\"b"}', ['Endpoint=sb://x/;SharedAccessKey=a"b'])).toBe('{"cs":"***"}');
  });

  it('finds secret values by schema flag or by key name', () => {
    expect(secretValues({ connection_string: 'cs', port: 1, nested: { token: 't0k', list: ['x'] }, other: 'o' }, (k) => k === 'list').sort()).toEqual(['cs', 't0k', 'x']);
  });

  it('a child shares its parent\'s secrets; json records carry task, provider and code', () => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (d) => (text += d));
    const root = new Logger({ stream: out, format: 'json', name: 'dstream', now: () => new Date(0) });
    const child = root.child({ task: 't' });
    child.addSecrets(['s3cr3t']);
    root.error('failed with s3cr3t', { code: 'X', provider: 'p' });
    child.forward('{"level":"warn","message":"retry s3cr3t","code":"Y"}', 'asb-sink', 'asb-sink');
    expect(text.trim().split('\n').map((l) => JSON.parse(l))).toEqual([
      { time: '1970-01-01T00:00:00.000Z', level: 'error', task: null, provider: 'p', message: 'failed with ***', code: 'X' },
      { time: '1970-01-01T00:00:00.000Z', level: 'warn', task: 't', provider: 'asb-sink', message: 'retry ***', code: 'Y' },
    ]);
  });

  it('a provider\'s stderr tail: a JSON array of its records (secrets masked) beside the message, or text under a heading', () => {
    const lines = ['connecting with s3cr3t', '{"level":"warn","message":"retry s3cr3t"}', '{not json'];
    const written = (format: 'json' | 'text') => {
      const out = new PassThrough();
      let text = '';
      out.on('data', (d) => (text += d));
      new Logger({ stream: out, format, name: 'dstream', secrets: ['s3cr3t'], now: () => new Date(0) }).error('input x: failed (exit code 1)', { stderr: lines });
      return text;
    };
    const json = written('json');
    expect(json.split('\n')).toHaveLength(2);
    expect(JSON.parse(json)).toEqual({
      time: '1970-01-01T00:00:00.000Z',
      level: 'error',
      task: null,
      provider: null,
      message: 'input x: failed (exit code 1)',
      stderr: ['connecting with ***', { level: 'warn', message: 'retry ***' }, '{not json'],
    });
    expect(written('text')).toBe('dstream: input x: failed (exit code 1)\n--- last lines of its stderr ---\nconnecting with ***\n{"level":"warn","message":"retry ***"}\n{not json\n');
  });
});
