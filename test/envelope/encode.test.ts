import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { decodeEnvelopes, encodeEnvelopes, ErrorCodes } from '../../lib/index.js';
import { collect, tick } from '../support/streams.js';

const env = (i: number) => ({ source: 's', type: 'cdc', data: { Id: i, Name: `n${i} ✓` }, metadata: { TableName: 'Persons' } });

describe('encodeEnvelopes', () => {
  it('writes one JSON line per envelope that decodeEnvelopes reads back', async () => {
    const input = Array.from({ length: 500 }, (_, i) => env(i));
    const out = await collect(Readable.from(input).pipe(encodeEnvelopes()).pipe(decodeEnvelopes()));
    expect(out).toEqual(input);
  });

  it('coalesces a burst written in one tick into few chunks', async () => {
    const e = encodeEnvelopes();
    const chunks: Buffer[] = [];
    e.on('data', (c: Buffer) => chunks.push(c));
    for (let i = 0; i < 1000; i++) e.write(env(i));
    e.end();
    await new Promise((r) => e.on('end', r));
    const lines = Buffer.concat(chunks).toString('utf8').trimEnd().split('\n');
    expect(lines).toHaveLength(1000);
    expect(chunks.length).toBeLessThan(10);
  });

  it('does not hold a lone envelope back waiting for more', async () => {
    const e = encodeEnvelopes();
    const got: string[] = [];
    e.on('data', (c: Buffer) => got.push(c.toString()));
    e.write(env(1));
    await tick();
    expect(got.join('')).toBe(`${JSON.stringify(env(1))}\n`);
    e.end();
  });

  it('holds writes back when its reader does not read (bounded buffer)', () => {
    const e = encodeEnvelopes({ chunkBytes: 1024 });
    let accepted = 0;
    while (e.write(env(accepted)) && accepted < 100_000) accepted++;
    // Nothing reads: acceptance stops after about one readable buffer (16 KiB) plus one chunk.
    expect(accepted).toBeLessThan(1000);
    expect(e.readableLength).toBeLessThan(32 * 1024);
    e.destroy();
  });

  it('fails with DSTREAM_ERR_INVALID_RECORD on a value JSON cannot encode', async () => {
    const circular: Record<string, unknown> = { data: 1 };
    circular.self = circular;
    for (const bad of [{ data: 10n }, circular]) {
      const err = await pipeline(Readable.from([bad]), encodeEnvelopes(), new PassThrough().resume()).catch((e) => e);
      expect(err.code).toBe(ErrorCodes.INVALID_RECORD);
      expect(err.message).toMatch(/cannot be encoded as JSON/);
    }
  });

  it('writes everything before ending, through a slow destination', async () => {
    const parts: string[] = [];
    const slow = new Writable({
      highWaterMark: 64,
      write(c, _e, cb) {
        parts.push(c.toString());
        setTimeout(cb, 1);
      },
    });
    await pipeline(Readable.from(Array.from({ length: 3000 }, (_, i) => env(i))), encodeEnvelopes({ chunkBytes: 4096 }), slow);
    expect(parts.join('').trimEnd().split('\n')).toHaveLength(3000);
  });
});
