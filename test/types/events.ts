/**
 * Compiled by `npm run typecheck`, never run: the custom events of dstream's streams are typed, so a
 * listener of the wrong shape for one of them does not compile (each `@ts-expect-error` below fails
 * the typecheck if the line after it compiles).
 */
import { once } from 'node:events';
import type { Readable } from 'node:stream';
import type { Assignment, CheckpointEnvelope, EnvelopeDecoder, FileSink, InvalidRecord, Partitioner, Router, ServiceBusSink } from '../../lib/index.js';
import type { CommandHeader, CommandRouter, ResultLine } from '../../lib/provider/index.js';

declare const sb: ServiceBusSink;
declare const files: FileSink;
declare const partitioner: Partitioner;
declare const router: Router;
declare const decoder: EnvelopeDecoder;
declare const commands: CommandRouter;

// Right usages compile, with the arguments' types inferred.
sb.on('ack', (records) => records.toFixed());
sb.once('ack', (records: number) => records);
sb.off('ack', (records) => records + 1);
files.on('sync', (records) => records.toFixed());
files.on('repaired', (r) => `${r.path} ${r.cutBytes.toFixed()}`);
partitioner.on('partition', (key) => key.toUpperCase());
partitioner.on('checkpoint', (cp: CheckpointEnvelope) => cp.data.position);
router.on('destination', (a: Assignment) => a.destination);
router.on('invalid', (rec: InvalidRecord) => rec.reason);
decoder.on('invalid', (rec) => rec.line);
commands.on('command', (h: CommandHeader) => h.command);
commands.on('result', (line: ResultLine) => line.status);
// A Writable's and a Transform's own events are typed as Node types them (and take any listener, as there); undeclared names take any listener; calls chain.
sb.on('error', (err) => err.message).on('pipe', (src: Readable) => src.readable);
router.on('data', (chunk) => chunk).on('end', () => undefined);
sb.on('some-other-event', (a: string, b: number) => a + b);
const name: string = 'ack';
sb.on(name, () => undefined);
const chained: ServiceBusSink = sb.once('finish', () => undefined);
void chained;
void new Promise((resolve) => sb.once('finish', resolve));
void new Promise((resolve) => sb.once('ack', resolve));
void (async () => {
  const [records] = await once(sb, 'ack');
  void records;
})();

// Wrong usages do not compile.
// @ts-expect-error 'ack' hands on a number of records
sb.on('ack', (records: string) => records);
// @ts-expect-error 'ack' hands on one argument
sb.once('ack', (records: number, more: number) => records + more);
// @ts-expect-error 'sync' hands on a number
files.on('sync', (r: { path: string }) => r.path);
// @ts-expect-error 'repaired' hands on { path, cutBytes }
files.once('repaired', (bytes: number) => bytes);
// @ts-expect-error 'checkpoint' hands on a checkpoint envelope
partitioner.on('checkpoint', (position: string) => position);
// @ts-expect-error 'partition' hands on the key, a string
partitioner.on('partition', (key: number) => key);
// @ts-expect-error 'destination' hands on an Assignment
router.on('destination', (queue: number) => queue);
// @ts-expect-error 'invalid' hands on an InvalidRecord
decoder.on('invalid', (line: number) => line);
// @ts-expect-error 'result' hands on a ResultLine
commands.on('result', (code: number) => code);
// The arguments are inferred, not `any`.
// @ts-expect-error records is a number
sb.on('ack', (records) => records.toUpperCase());
// @ts-expect-error rec is an InvalidRecord
decoder.on('invalid', (rec) => rec.nope);
// @ts-expect-error a Writable's 'error' hands on an Error
sb.on('error', (err) => err.nope);
