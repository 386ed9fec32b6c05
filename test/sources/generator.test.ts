import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { runProvider, type CheckpointEnvelope, type Envelope } from '../../lib/index.js';
import { generateChanges, generatorSource, type GeneratorPosition } from '../../lib/sources/generator/generator.js';
import { generatorProvider } from '../../lib/providers/generator.js';
import { collect } from '../support/streams.js';

const take = (opts: Parameters<typeof generateChanges>[0]) => [...generateChanges(opts)];

describe('the generator', () => {
  it('is deterministic per seed', () => {
    expect(take({ seed: 7, count: 200 })).toEqual(take({ seed: 7, count: 200 }));
    expect(take({ seed: 8, count: 200 })).not.toEqual(take({ seed: 7, count: 200 }));
  });

  it('emits transactions of rows sharing one LSN, each followed by a checkpoint, and stops at count', () => {
    const all = take({ count: 500 });
    const rows = all.filter((e) => e.type !== 'checkpoint');
    expect(rows).toHaveLength(500);
    expect(all[all.length - 1]!.type).toBe('checkpoint');
    let lsn: string | undefined;
    for (const e of all) {
      if (e.type === 'checkpoint') {
        expect((e as CheckpointEnvelope).data.position).toMatchObject({ lsn });
        lsn = undefined;
      } else {
        lsn ??= e.metadata!.LSN;
        expect(e.metadata!.LSN).toBe(lsn);
      }
    }
  });

  it('updates and deletes only rows that exist, and mixes all three operations over every table', () => {
    const live = new Map<string, Set<unknown>>();
    const ops = new Set<string>();
    const tables = new Set<string>();
    for (const e of take({ count: 3000 })) {
      if (e.type === 'checkpoint') continue;
      const t = e.metadata!.TableName!;
      tables.add(t);
      ops.add(e.metadata!.OperationType as string);
      const key = Object.values(e.data as object)[0];
      const set = live.get(t) ?? new Set();
      live.set(t, set);
      if (e.metadata!.OperationType === 'Insert') set.add(key);
      else {
        expect(set.has(key), `${e.metadata!.OperationType} of ${t} ${String(key)}`).toBe(true);
        if (e.metadata!.OperationType === 'Delete') set.delete(key);
      }
    }
    expect([...ops].sort()).toEqual(['Delete', 'Insert', 'Update']);
    expect([...tables].sort()).toEqual(['Customers', 'Orders', 'Persons']);
  });

  it('resumes after a checkpoint with nothing lost and nothing repeated', async () => {
    const full = take({ seed: 3, count: 400 });
    const cps = full.filter((e) => e.type === 'checkpoint') as CheckpointEnvelope[];
    const at = cps[40]!;
    const resumed = await collect<Envelope>(generatorSource({ seed: 3, count: 400, after: at.data.position as GeneratorPosition }));
    expect(resumed).toEqual(full.slice(full.indexOf(at) + 1));
  });

  it('refuses a position that is not a generator checkpoint', () => {
    expect(() => generatorSource({ after: { lsn: '0x1' } as never })).toThrow(/must come from a generator checkpoint/);
  });

  it('runs as a provider: discover lists the tables with keys; run resumes from the state in the header', async () => {
    const run = async (header: object) => {
      const stdin = new PassThrough();
      const stdout = new PassThrough();
      const out: string[] = [];
      stdout.on('data', (d) => out.push(d.toString()));
      const code = runProvider(generatorProvider, { stdin, stdout, stderr: new PassThrough(), argv: [], env: {}, signals: null });
      stdin.end(`${JSON.stringify(header)}\n`);
      return { code: await code, lines: out.join('').trim().split('\n').map((l) => JSON.parse(l)) };
    };
    const d = await run({ command: 'discover', config: {} });
    expect(d.lines[1]).toMatchObject({ status: 'ok', streams: [{ name: 'Persons', keys: ['Id'] }, { name: 'Orders', keys: ['OrderId'] }, { name: 'Customers', keys: ['CustomerId'] }] });
    const full = take({ count: 50 });
    const cp = full.filter((e) => e.type === 'checkpoint')[5] as CheckpointEnvelope;
    const r = await run({ command: 'run', config: { count: 50 }, state: cp.data.position });
    expect(r.code).toBe(0);
    expect(r.lines.slice(1)).toEqual(full.slice(full.indexOf(cp) + 1));
  });
});
