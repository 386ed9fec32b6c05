import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../lib/index.js';
import { ExitCodes, parseHeader, routeCommands, type CommandHeader } from '../../lib/provider/index.js';
import { collect } from '../support/streams.js';

const data = (n: number) => ({ source: 's', type: 'cdc', data: { n }, metadata: { TableName: 'T' } });

describe('routeCommands', () => {
  it('dispatches a lifecycle verb to its handler and emits one ok result line', async () => {
    const seen: CommandHeader[] = [];
    const r = routeCommands({
      plan: (h) => {
        seen.push(h);
        return { resources: [{ kind: 'queue', name: 'Persons_cdc_events', action: 'create' }] };
      },
    });
    const out = await collect(Readable.from([{ command: 'plan', config: { a: 1 }, protocol: 1 }]).pipe(r));
    expect(out).toEqual([{ status: 'ok', command: 'plan', resources: [{ kind: 'queue', name: 'Persons_cdc_events', action: 'create' }] }]);
    expect(seen[0]).toMatchObject({ command: 'plan', config: { a: 1 } });
    expect(r.exitCode).toBe(0);
  });

  it('passes the data through after a run header, calling the run handler first', async () => {
    const order: string[] = [];
    const r = routeCommands({ run: () => void order.push('run') });
    r.on('data', () => order.push('data'));
    const out = await collect(Readable.from([{ command: 'run', config: {} }, data(1), data(2)]).pipe(r));
    expect(out).toEqual([data(1), data(2)]);
    expect(order[0]).toBe('run');
  });

  it('treats a first line without "command" as a bare config for run (older executors)', async () => {
    let header: CommandHeader | undefined;
    const r = routeCommands({ run: (h) => void (header = h) });
    const out = await collect(Readable.from([{ interval: 1000, maxCount: 5 }, data(1)]).pipe(r));
    expect(header).toEqual({ command: 'run', config: { interval: 1000, maxCount: 5 }, legacy: true });
    expect(out).toEqual([data(1)]);
  });

  it('answers an unknown verb with an error listing the verbs this provider supports, and a usage exit code', async () => {
    const r = routeCommands({ run: () => {}, init: () => ({}) }, { provider: 'asb-sink' });
    const out = await collect(Readable.from([{ command: 'migrate', config: {} }]).pipe(r));
    expect(out).toEqual([
      {
        status: 'error',
        command: 'migrate',
        code: ErrorCodes.UNKNOWN_COMMAND,
        message: 'unknown command "migrate"; asb-sink supports run, init',
      },
    ]);
    expect(r.exitCode).toBe(ExitCodes.USAGE);
  });

  it('answers a verb without a handler with "provider X does not support Y"', async () => {
    const r = routeCommands({ run: () => {} }, { provider: 'mssql-cdc' });
    const out = await collect(Readable.from([{ command: 'destroy', config: {} }]).pipe(r));
    expect(out[0]).toMatchObject({ status: 'error', command: 'destroy', code: ErrorCodes.UNSUPPORTED_COMMAND });
    expect((out[0] as { message: string }).message).toBe('mssql-cdc does not support "destroy"; it supports run');
    expect(r.exitCode).toBe(ExitCodes.USAGE);
  });

  it('turns a handler failure into an error result with its code and a failure exit code', async () => {
    const r = routeCommands({ status: async () => Promise.reject(new Error('namespace unreachable')) });
    const out = await collect(Readable.from([{ command: 'status', config: {} }]).pipe(r));
    expect(out).toEqual([{ status: 'error', command: 'status', message: 'namespace unreachable' }]);
    expect(r.exitCode).toBe(ExitCodes.FAILURE);
  });

  it('reports input that ends before any header as a protocol error', async () => {
    const r = routeCommands({ run: () => {} }, { provider: 'p' });
    const out = await collect(Readable.from([]).pipe(r));
    expect(out[0]).toMatchObject({ status: 'error', code: ErrorCodes.PROTOCOL });
    expect(r.exitCode).toBe(ExitCodes.PROTOCOL);
  });

  it('reads and drops input that follows a lifecycle header, so the writer never blocks', async () => {
    const r = routeCommands({ discover: () => ({ streams: [] }) });
    const many = [{ command: 'discover', config: {} }, ...Array.from({ length: 1000 }, (_, i) => data(i))];
    const out = await collect(Readable.from(many).pipe(r));
    expect(out).toEqual([{ status: 'ok', command: 'discover', streams: [] }]);
  });
});

describe('parseHeader', () => {
  it('refuses malformed headers with protocol errors', () => {
    expect(() => parseHeader([1])).toThrow(/must be a JSON object, got an array/);
    expect(() => parseHeader({ command: 'run', config: 'x' })).toThrow(/"config" in the command header must be an object/);
    expect(() => parseHeader({ command: 'run', protocol: 2 })).toThrow(/speaks protocol 2; this provider speaks 1/);
    expect(() => parseHeader({ command: 'init', streams: {} })).toThrow(/"streams" must be a list/);
  });

  it('reads a data envelope in place of a header as a pipe (run standalone), never as config', () => {
    expect(parseHeader(data(1))).toEqual({ command: 'run', config: {}, inPipe: true });
  });

  it('defaults config to {}', () => {
    expect(parseHeader({ command: 'discover' })).toEqual({ command: 'discover', config: {} });
  });
});
