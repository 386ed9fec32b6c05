import { PassThrough, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { isUtf8 } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { decodeEnvelopes, ErrorCodes, lineOf, type Envelope } from '../../lib/index.js';
import { firstBadByte } from '../../lib/envelope/decode.js';
import { bytes, collect, rechunk, text } from '../support/streams.js';

const rows: Envelope[] = [
  { source: 'mssql', type: 'cdc', data: { Id: 1, Name: 'Zoë Ünal 🚀' }, metadata: { TableName: 'Persons', OperationType: 'Insert', LSN: '0x0001' } },
  { source: 'mssql', type: 'cdc', data: { Id: 2, Note: '日本語テキスト' }, metadata: { TableName: 'Orders', OperationType: 'Update' } },
  { type: 'checkpoint', data: { position: { lsn: '0x0001' } }, metadata: {} },
  { data: { legacy: true }, metadata: { TableName: 'Customers' } },
];

// BOM, CRLF, blank and whitespace-only lines, multi-byte characters, no newline at the end.
const input = Buffer.from(
  `\uFEFF${JSON.stringify(rows[0])}\r\n\n   \n${JSON.stringify(rows[1])}\n${JSON.stringify(rows[2])}\r\n\t\r\n${JSON.stringify(rows[3])}`,
  'utf8',
);

describe('decodeEnvelopes', () => {
  it('decodes the same envelopes whatever the chunk size (every size from 1 byte to the whole input)', async () => {
    for (let size = 1; size <= input.length; size++) {
      const out = await collect(bytes(rechunk(input, size)).pipe(decodeEnvelopes()));
      expect(out, `chunk size ${size}`).toEqual(rows);
    }
  });

  it('counts lines including blank ones and remembers the line of each envelope', async () => {
    const d = decodeEnvelopes();
    const out = await collect<Envelope>(bytes([input]).pipe(d));
    expect(out.map((e) => lineOf(e as object))).toEqual([1, 4, 5, 7]);
    expect(d.stats).toMatchObject({ lines: 7, envelopes: 4, skipped: 0 });
  });

  it('accepts string chunks', async () => {
    const s = new PassThrough({ encoding: 'utf8' });
    const d = decodeEnvelopes();
    s.pipe(d);
    s.end(`${JSON.stringify(rows[0])}\n`);
    expect(await collect(d)).toEqual([rows[0]]);
  });

  const invalid: Array<[string, string, RegExp]> = [
    ['not JSON', '{"data":', /line 2: not valid JSON/],
    ['a JSON array', '[1,2]', /line 2: not an envelope: expected a JSON object, got an array/],
    ['a JSON string', '"hello"', /line 2: not an envelope: expected a JSON object, got string "hello"/],
    ['null', 'null', /line 2: not an envelope: expected a JSON object, got null/],
    ['an object without data', '{"metadata":{}}', /line 2: not an envelope: missing "data"/],
    ['metadata that is not an object', '{"data":1,"metadata":[]}', /"metadata" must be an object, got an array/],
    ['a type that is not a string', '{"data":1,"type":7}', /"type" must be a string/],
    ['a checkpoint without a position', '{"type":"checkpoint","data":{}}', /checkpoint without "data.position"/],
  ];

  for (const [what, line, message] of invalid) {
    it(`fails on ${what} with the line number and an excerpt (policy fail)`, async () => {
      const src = bytes([Buffer.from(`${JSON.stringify(rows[0])}\n${line}\n${JSON.stringify(rows[1])}\n`)]);
      const err = await pipeline(src, decodeEnvelopes(), new PassThrough({ objectMode: true }).resume()).catch((e) => e);
      expect(err.code).toBe(ErrorCodes.INVALID_RECORD);
      expect(err.message).toMatch(message);
      expect(err.message).toContain(line.slice(0, 10));
      expect(err.details.line).toBe(2);
    });

    it(`skips ${what}, counts it and keeps the rest (policy skip)`, async () => {
      const d = decodeEnvelopes({ onInvalid: 'skip' });
      const seen: unknown[] = [];
      d.on('invalid', (r) => seen.push(r));
      const out = await collect(bytes([Buffer.from(`${JSON.stringify(rows[0])}\n${line}\n${JSON.stringify(rows[1])}\n`)]).pipe(d));
      expect(out).toEqual([rows[0], rows[1]]);
      expect(d.stats.skipped).toBe(1);
      expect(seen).toHaveLength(1);
      expect(d.summary()).toMatch(/^decode: skipped 1 invalid record \(first: line 2: /);
    });
  }

  it('dead-letters invalid lines with reason, line number and the raw line, and keeps the rest', async () => {
    const dead = text();
    const d = decodeEnvelopes({ onInvalid: 'dead-letter', deadLetter: dead });
    const src = `${JSON.stringify(rows[0])}\nnot json at all\n[1]\n${JSON.stringify(rows[1])}\n`;
    const out = await collect(bytes(rechunk(Buffer.from(src), 7)).pipe(d));
    expect(out).toEqual([rows[0], rows[1]]);
    const letters = dead
      .text()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(letters).toHaveLength(2);
    expect(letters[0]).toMatchObject({ stage: 'decode', line: 2, raw: 'not json at all' });
    expect(letters[0].reason).toMatch(/not valid JSON/);
    expect(letters[1]).toMatchObject({ line: 3, raw: '[1]' });
    expect(d.stats.deadLettered).toBe(2);
  });

  it('waits for a slow dead-letter stream instead of buffering without bound', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const { Writable } = await import('node:stream');
    const slow = new Writable({
      highWaterMark: 1,
      write(_c, _e, cb) {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        setTimeout(() => {
          inFlight--;
          cb();
        }, 1);
      },
    });
    const lines = Array.from({ length: 200 }, (_, i) => `bad ${i}`).join('\n');
    const d = decodeEnvelopes({ onInvalid: 'dead-letter', deadLetter: slow });
    await collect(bytes(rechunk(Buffer.from(lines), 50)).pipe(d));
    expect(d.stats.deadLettered).toBe(200);
    expect(maxInFlight).toBe(1);
  });

  it('a later line that fails the stream still lets the dead-letter writes before it finish (and fail loudly)', async () => {
    const taken: string[] = [];
    const slow = new Writable({
      write(chunk: Buffer, _enc, cb) {
        // Takes the record only on a later turn: the failure of line 2 comes first.
        setImmediate(() => {
          taken.push(chunk.toString());
          cb();
        });
      },
    });
    const d = decodeEnvelopes({ onInvalid: 'dead-letter', deadLetter: slow, maxLineBytes: 50 });
    const err = await collect(bytes([Buffer.from(`{oops\n${'x'.repeat(60)}\n`)]).pipe(d)).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.LINE_TOO_LONG);
    expect(taken).toHaveLength(1);
    expect(JSON.parse(taken[0]!)).toMatchObject({ stage: 'decode', line: 1, raw: '{oops' });
    // A dead-letter stream that fails, then a line that fails: the stream's error is not lost
    // as an unhandled rejection; the first failure is reported.
    const broken = new Writable({ write: (_c, _e, cb) => setImmediate(() => cb(new Error('disk full'))) });
    broken.on('error', () => undefined);
    const d2 = decodeEnvelopes({ onInvalid: 'dead-letter', deadLetter: broken, maxLineBytes: 50 });
    const err2 = await collect(bytes([Buffer.from(`{oops\n${'x'.repeat(60)}\n`)]).pipe(d2)).catch((e) => e);
    expect(err2.code).toBe(ErrorCodes.LINE_TOO_LONG);
  });

  it('refuses dead-letter without a stream at construction', () => {
    expect(() => decodeEnvelopes({ onInvalid: 'dead-letter' })).toThrow(expect.objectContaining({ code: ErrorCodes.INVALID_OPTION }));
    expect(() => decodeEnvelopes({ onInvalid: 'drop' as never })).toThrow(/onInvalid" must be one of "fail", "skip", "dead-letter"/);
  });

  it('stops with DSTREAM_ERR_LINE_TOO_LONG naming the line when a line exceeds maxLineBytes, whatever the chunking', async () => {
    const long = `${JSON.stringify(rows[0])}\n{"data":"${'x'.repeat(200)}"}\n`;
    for (const size of [1, 13, 64, 1000]) {
      const err = await collect(bytes(rechunk(Buffer.from(long), size)).pipe(decodeEnvelopes({ maxLineBytes: 150 }))).catch((e) => e);
      expect(err.code, `chunk ${size}`).toBe(ErrorCodes.LINE_TOO_LONG);
      expect(err.message).toMatch(/line 2 is longer than maxLineBytes \(150 bytes\)/);
    }
  });

  it('accepts a line of exactly maxLineBytes', async () => {
    const line = JSON.stringify({ data: 'y'.repeat(100) });
    const out = await collect(bytes(rechunk(Buffer.from(`${line}\n${line}`), 9)).pipe(decodeEnvelopes({ maxLineBytes: line.length })));
    expect(out).toHaveLength(2);
  });

  it('passes the first line through unvalidated in header mode, and validates the rest', async () => {
    const src = `\n{"command":"run","config":{"a":1}}\n${JSON.stringify(rows[0])}\n`;
    const out = await collect(bytes(rechunk(Buffer.from(src), 5)).pipe(decodeEnvelopes({ header: true })));
    expect(out).toEqual([{ command: 'run', config: { a: 1 } }, rows[0]]);
  });

  it('reports a header that is not a JSON object as a protocol error, not an invalid record', async () => {
    const err = await collect(bytes([Buffer.from('hello\n')]).pipe(decodeEnvelopes({ header: true, onInvalid: 'skip' }))).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.PROTOCOL);
    expect(err.message).toMatch(/line 1: the command header is/);
  });

  it('keeps memory bounded: a fast producer into a decoder nobody reads is held back', async () => {
    const line = Buffer.from(`${JSON.stringify(rows[0])}\n`);
    const chunk = Buffer.concat(Array.from({ length: 100 }, () => line));
    const d = decodeEnvelopes();
    let written = 0;
    while (d.write(chunk) && written < 10_000) written++;
    expect(written).toBeLessThan(5);
    expect(d.readableLength).toBeLessThanOrEqual(100 + 16);
    d.destroy();
  });

  describe('a line that is not valid UTF-8', () => {
    const good = JSON.stringify(rows[0]);
    // "Zo" + a lone continuation byte + "e": JSON-wise a fine line, byte-wise not UTF-8.
    const bad = Buffer.concat([Buffer.from('{"type":"cdc","data":{"Name":"Zo'), Buffer.from([0x80]), Buffer.from('e"},"metadata":{"TableName":"Persons"}}')]);
    const stream = Buffer.concat([Buffer.from(`${good}\n`), bad, Buffer.from(`\n${good}\n`)]);

    it('fails with its line number and the position of the bad byte, whatever the chunk size', async () => {
      for (const size of [1, 7, stream.length]) {
        const err = await collect(bytes(rechunk(stream, size)).pipe(decodeEnvelopes())).catch((e) => e);
        expect(err.code).toBe(ErrorCodes.INVALID_RECORD);
        expect(err.message).toMatch(/^line 2: not valid UTF-8 \(byte 33 of the line\): /);
      }
    });

    it('is skipped and counted, or dead-lettered with its exact bytes', async () => {
      const d = decodeEnvelopes({ onInvalid: 'skip' });
      expect(await collect(bytes([stream]).pipe(d))).toEqual([rows[0], rows[0]]);
      expect(d.summary()).toBe('decode: skipped 1 invalid record (first: line 2: not valid UTF-8 (byte 33 of the line))');
      const letters: string[] = [];
      const dead = new Writable({ write: (c: Buffer, _e, done) => (letters.push(c.toString()), done()) });
      await collect(bytes([stream]).pipe(decodeEnvelopes({ onInvalid: 'dead-letter', deadLetter: dead })));
      expect(letters).toHaveLength(1);
      const letter = JSON.parse(letters[0]!);
      expect(letter).toMatchObject({ stage: 'decode', line: 2, reason: 'not valid UTF-8 (byte 33 of the line)' });
      expect(Buffer.from(letter.rawBase64, 'base64').equals(bad)).toBe(true);
    });

    it('U+FFFD written as valid UTF-8 is text like any other', async () => {
      const row = { ...rows[0]!, data: { Name: 'a\uFFFDb' } };
      expect(await collect(bytes([Buffer.from(`${JSON.stringify(row)}\n`)]).pipe(decodeEnvelopes()))).toEqual([row]);
    });

    it('a bad command header is a protocol error saying so', async () => {
      const err = await collect(bytes([Buffer.concat([Buffer.from('{"command":"run","x":"'), Buffer.from([0xff]), Buffer.from('"}\n')])]).pipe(decodeEnvelopes({ header: true, onInvalid: 'skip' }))).catch((e) => e);
      expect(err.code).toBe(ErrorCodes.PROTOCOL);
      expect(err.message).toMatch(/^line 1: the command header is not valid UTF-8 \(byte 23 of the line\)/);
    });

    it('firstBadByte agrees with Node on random and edge-case bytes', () => {
      const cases = [[0xc0, 0x80], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xf0, 0x9f, 0x9a], [0xe2, 0x82, 0xac], [0xf0, 0x9f, 0x9a, 0x80]].map((b) => Buffer.from(b));
      for (let i = 0; i < 2000; i++) cases.push(randomBytes(1 + (i % 12)));
      for (const b of cases) {
        const at = firstBadByte(b);
        expect(at === b.length, b.toString('hex')).toBe(isUtf8(b));
        if (at < b.length) expect(isUtf8(b.subarray(0, at)), b.toString('hex')).toBe(true);
      }
    });
  });
});
