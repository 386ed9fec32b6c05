import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { checkpoint, ErrorCodes, fileSink, toFiles, type CheckpointEnvelope, type Envelope } from '../../lib/index.js';

const row = (table: string, n: number): Envelope => ({ source: 't', type: 'cdc', data: { n }, metadata: { TableName: table } });
const lines = (path: string) =>
  readFileSync(path, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));

describe('fileSink and toFiles', () => {
  it('writes one NDJSON file per destination, in order, named by the template', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-files-'));
    const input: Envelope[] = [];
    for (let i = 0; i < 300; i++) input.push(row(['Persons', 'Orders'][i % 2]!, i));
    await pipeline(Readable.from(input), toFiles({ dir }));
    expect(readdirSync(dir).sort()).toEqual(['Orders_cdc_events.ndjson', 'Persons_cdc_events.ndjson']);
    expect(lines(join(dir, 'Persons_cdc_events.ndjson'))).toEqual(input.filter((e) => e.metadata?.TableName === 'Persons'));
  });

  it('fsyncs the records before a checkpoint behind them is acknowledged', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-files-'));
    const events: string[] = [];
    const out = toFiles({
      dir,
      onSink: (d, sink) => sink.on('sync', (n: number) => events.push(`sync ${d} ${n}`)),
      onCheckpoint: (cp) => void events.push(`checkpoint ${cp.data.position}`),
    });
    await pipeline(Readable.from([row('A', 1), row('B', 2), checkpoint(1), row('A', 3), checkpoint(2)]), out);
    const cp1 = events.indexOf('checkpoint 1');
    const cp2 = events.indexOf('checkpoint 2');
    expect(cp1).toBeGreaterThan(-1);
    // Every record before checkpoint 1 was synced before it; A:3 was synced before checkpoint 2.
    const syncedBefore = (i: number, d: string) => events.slice(0, i).filter((e) => e.startsWith(`sync ${d}_cdc_events`)).reduce((n, e) => n + Number(e.split(' ')[2]), 0);
    expect(syncedBefore(cp1, 'A')).toBeGreaterThanOrEqual(1);
    expect(syncedBefore(cp1, 'B')).toBeGreaterThanOrEqual(1);
    expect(syncedBefore(cp2, 'A')).toBe(2);
  });

  it('yields acknowledged checkpoints through checkpoints() and ends with the stream', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-files-'));
    const out = toFiles({ dir });
    const seen: unknown[] = [];
    const reading = (async () => {
      for await (const cp of out.checkpoints()) seen.push((cp as CheckpointEnvelope).data.position);
    })();
    await pipeline(Readable.from([row('A', 1), checkpoint('x'), row('A', 2), checkpoint('y')]), out);
    await reading;
    expect(seen).toEqual(['x', 'y']);
  });

  it('appends to an existing file rather than replacing it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-files-'));
    await pipeline(Readable.from([row('A', 1)]), fileSink({ dir, destination: 'A_q' }));
    await pipeline(Readable.from([row('A', 2)]), fileSink({ dir, destination: 'A_q' }));
    expect(lines(join(dir, 'A_q.ndjson')).map((e) => e.data.n)).toEqual([1, 2]);
  });

  it('refuses a destination that would leave the directory, and reports I/O failures with the path', async () => {
    expect(() => fileSink({ dir: '/tmp', destination: 'a/../../etc' })).toThrow(/contains "\/"|may contain only/);
    // A directory path that runs through a regular file cannot be created (ENOTDIR).
    const base = mkdtempSync(join(tmpdir(), 'dstream-files-'));
    await pipeline(Readable.from([row('A', 1)]), fileSink({ dir: base, destination: 'plain' }));
    const blocked = join(base, 'plain.ndjson', 'sub');
    const err = await pipeline(Readable.from([row('A', 1)]), fileSink({ dir: blocked, destination: 'A' })).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.IO);
    expect(err.message).toMatch(new RegExp(`^could not open ${blocked}/A\\.ndjson: ENOTDIR`));
  });
});
