/** Counting the change rows an input hands on (`dstream_rows_read_total{table}`). */
import { Transform } from 'node:stream';
import type { Envelope } from '../envelope/types.js';
import { tableLabel } from '../envelope/table.js';
import type { DstreamMetrics } from './registry.js';

/** A function counting one envelope (checkpoints and other markers are not rows). */
export function rowCounter(metrics: DstreamMetrics): (env: Envelope) => void {
  const children = new Map<string, { inc(n?: number): void }>();
  return (env) => {
    if (env.type === 'checkpoint') return;
    const table = tableLabel(env);
    let child = children.get(table);
    if (child === undefined) children.set(table, (child = metrics.rowsRead.labels(table)));
    child.inc();
  };
}

/** A pass-through stage that counts rows; none is needed without metrics. */
export function countRows(metrics: DstreamMetrics): Transform {
  const count = rowCounter(metrics);
  return new Transform({
    objectMode: true,
    transform(env: Envelope, _enc, callback) {
      count(env);
      callback(null, env);
    },
  });
}
