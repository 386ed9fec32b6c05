import { Readable, Writable } from 'node:stream';

/** Splits `buf` into chunks of `size` bytes (the last may be shorter). */
export function rechunk(buf: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) out.push(buf.subarray(i, i + size));
  return out;
}

/** A byte stream that yields exactly these chunks, one per read. */
export function bytes(chunks: Buffer[]): Readable {
  return Readable.from(chunks, { objectMode: false });
}

export async function collect<T = unknown>(readable: AsyncIterable<unknown>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of readable) out.push(x as T);
  return out;
}

/** A Writable that remembers what it was given, in order. */
export function memorySink(options: { delayMs?: number; highWaterMark?: number } = {}): Writable & { items: unknown[] } {
  const items: unknown[] = [];
  const sink = new Writable({
    objectMode: true,
    highWaterMark: options.highWaterMark ?? 16,
    write(chunk, _enc, cb) {
      const done = () => {
        items.push(chunk);
        cb();
      };
      if (options.delayMs) setTimeout(done, options.delayMs);
      else done();
    },
  });
  return Object.assign(sink, { items });
}

export function text(): Writable & { text: () => string } {
  const parts: Buffer[] = [];
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      parts.push(Buffer.from(chunk));
      cb();
    },
  });
  return Object.assign(w, { text: () => Buffer.concat(parts).toString('utf8') });
}

export const tick = (ms = 0) => new Promise<void>((r) => setTimeout(r, ms));

/** Reads envelopes until `done(seen)` holds (then stops the stream), or fails after `ms`. */
export async function readUntil<E = unknown>(stream: Readable, done: (seen: E[]) => boolean, ms = 5000): Promise<E[]> {
  const seen: E[] = [];
  const timer = setTimeout(() => stream.destroy(new Error(`timed out after ${ms} ms with ${seen.length} items: ${JSON.stringify(seen.slice(-3))}`)), ms);
  try {
    for await (const e of stream) {
      seen.push(e as E);
      if (done(seen)) break;
    }
  } finally {
    clearTimeout(timer);
  }
  return seen;
}

/** Resolves once `cond()` holds (checked every 10 ms); rejects after `ms`, naming the condition. */
export async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${cond.toString()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A log that calls `on` with each line as it comes. */
export function watched(on: (line: string) => unknown): string[] {
  const lines: string[] = [];
  lines.push = (...items: string[]) => {
    for (const l of items) Array.prototype.push.call(lines, l), on(l);
    return lines.length;
  };
  return lines;
}
