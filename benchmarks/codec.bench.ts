/**
 * In-process: our decoder and encoder against the usual ways of reading and writing NDJSON.
 * Input is held in memory in 64 KiB chunks so the disk is not measured.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { StringDecoder } from 'node:string_decoder';
import ndjson from 'ndjson';
import parserStream from 'stream-chain/jsonl/parserStream.js';
import stringerStream from 'stream-chain/jsonl/stringerStream.js';
import { decodeEnvelopes, encodeEnvelopes } from '../dist/lib/index.js';
import { cdcFile } from './cdc-data.js';
import { race, type BenchResult, type Contender } from './harness.js';

const CHUNK = 64 * 1024;

function chunksOf(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i += CHUNK) out.push(buf.subarray(i, i + CHUNK));
  return out;
}

const source = (chunks: Buffer[]) => Readable.from(chunks, { objectMode: false });
/** The same discarding sink for every contender. */
const discard = (objectMode: boolean) =>
  new Writable({
    objectMode,
    highWaterMark: objectMode ? 1024 : 64 * 1024,
    write(_c, _e, cb) {
      cb();
    },
    writev(_c, cb) {
      cb();
    },
  });
const nullObjects = () => discard(true);
const nullBytes = () => discard(false);

export async function run(lines: number, rounds: number): Promise<BenchResult> {
  const path = await cdcFile(lines);
  const buf = readFileSync(path);
  const chunks = chunksOf(buf);
  const count = (xs: unknown[]) => xs.length;

  const decoders: Contender[] = [
    { name: 'dstream decodeEnvelopes', run: () => pipeline(source(chunks), decodeEnvelopes(), nullObjects()) },
    {
      name: 'split + JSON.parse loop',
      run: async () => {
        const dec = new StringDecoder('utf8');
        let carry = '';
        for (const c of chunks) {
          const parts = (carry + dec.write(c)).split('\n');
          carry = parts.pop()!;
          for (const p of parts) if (p.length > 0) JSON.parse(p);
        }
        if (carry.length > 0) JSON.parse(carry);
      },
    },
    {
      name: 'readline + JSON.parse',
      run: async () => {
        for await (const line of createInterface({ input: source(chunks), crlfDelay: Infinity })) if (line.length > 0) JSON.parse(line);
      },
    },
    { name: 'ndjson.parse', run: () => pipeline(source(chunks), ndjson.parse(), nullObjects()) },
    { name: 'stream-chain jsonl parser', run: () => pipeline(source(chunks), parserStream(), nullObjects()) },
  ];

  const objects: unknown[] = buf
    .toString('utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l));
  const objectSource = () => Readable.from(objects, { objectMode: true, highWaterMark: 1024 });
  const encoders: Contender[] = [
    { name: 'dstream encodeEnvelopes', run: () => pipeline(objectSource(), encodeEnvelopes(), nullBytes()) },
    {
      name: 'Transform JSON.stringify per object',
      run: () =>
        pipeline(
          objectSource(),
          new Transform({
            writableObjectMode: true,
            transform(o, _e, cb) {
              cb(null, `${JSON.stringify(o)}\n`);
            },
          }),
          nullBytes(),
        ),
    },
    { name: 'ndjson.stringify', run: () => pipeline(objectSource(), ndjson.stringify(), nullBytes()) },
    { name: 'stream-chain jsonl stringer', run: () => pipeline(objectSource(), stringerStream(), nullBytes()) },
  ];

  const measurements = [];
  for (const [group, contenders] of [
    ['decode', decoders],
    ['encode', encoders],
  ] as const) {
    const medians = await race(contenders, rounds);
    for (const c of contenders) measurements.push({ group, name: c.name, ms: medians.get(c.name)!.ms, rounds: medians.get(c.name)!.rounds, lines: count(objects), bytes: buf.length });
  }
  return {
    measurements,
    targets: [
      { group: 'decode', subject: 'dstream decodeEnvelopes', baseline: 'readline + JSON.parse', minRatio: 1.0, text: 'decoder >= 1.0x readline + JSON.parse' },
      { group: 'encode', subject: 'dstream encodeEnvelopes', baseline: 'ndjson.stringify', minRatio: 3.0, text: 'encoder >= 3x ndjson.stringify' },
    ],
    notes: [
      'dstream decodeEnvelopes validates every envelope and records its line number; the baselines only parse JSON.',
      'The split + JSON.parse loop is synchronous (no stream machinery): a ceiling, not a target.',
    ],
  };
}
