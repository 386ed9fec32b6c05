/** The reader's generator as a Readable: what mssqlCdc() returns. */
import { Readable } from 'node:stream';
import type { Envelope } from '../../../envelope/types.js';
/** Readable.from(), except that destroying it aborts `stop` first, so a generator busy between yields ends. */
export function generatorStream(gen: AsyncGenerator<Envelope | Envelope[]>, stop: AbortController): Readable {
  let pumping = false;
  return new Readable({
    objectMode: true,
    highWaterMark: 64,
    read() {
      if (pumping) return;
      pumping = true;
      void (async () => {
        try {
          for (;;) {
            const n = await gen.next();
            if (n.done) {
              this.push(null);
              return;
            }
            if (Array.isArray(n.value)) {
              let more = true;
              for (const e of n.value) more = this.push(e);
              if (!more) return;
            } else if (!this.push(n.value)) return;
          }
        } catch (err) {
          this.destroy(err as Error);
        } finally {
          pumping = false;
        }
      })();
    },
    destroy(err, callback) {
      stop.abort();
      gen.return(undefined).then(
        () => callback(err),
        (e: Error) => callback(err ?? e),
      );
    },
  });
}
