// Library use: read CDC envelopes from a file, route them, fan out one sink per queue, and
// print each checkpoint once everything before it was accepted by every sink.
//   node examples/route-pipeline.mjs
import { createReadStream } from 'node:fs';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { decodeEnvelopes, partitionByTable, route } from 'dstream';

const counts = new Map();
const sinkFor = (queue) =>
  new Writable({
    objectMode: true,
    write(envelope, _encoding, done) {
      counts.set(queue, (counts.get(queue) ?? 0) + 1);
      setTimeout(done, 1); // a sink calls back once the record is durable
    },
  });

await pipeline(
  createReadStream(new URL('./data/changes.ndjson', import.meta.url)),
  decodeEnvelopes(),
  route({ template: '{database}.{table}_cdc_events', exclude: ['Customers'] }),
  partitionByTable({ sinkFor, onCheckpoint: (cp) => console.log(`checkpoint ${cp.data.position.lsn} acknowledged`) }),
);
for (const [queue, n] of [...counts].sort()) console.log(`${queue}: ${n} messages`);
