/**
 * Typed listeners for the custom events of dstream's streams. A stream declares its events as a map
 * from name to listener arguments, and its `on`/`once`/`off` as `Listen<Events, this>`: then
 * `sink.on('ack', (records) => ...)` gets `records: number`, and a listener of the wrong shape for a
 * declared event does not compile.
 */
import type { Readable } from 'node:stream';

/** The events every Writable emits. */
export interface WritableEvents {
  close: [];
  drain: [];
  error: [error: Error];
  finish: [];
  pipe: [source: Readable];
  unpipe: [source: Readable];
}

/** The events every Duplex (and Transform) emits. */
export interface DuplexEvents extends WritableEvents {
  data: [chunk: any];
  end: [];
  pause: [];
  readable: [];
  resume: [];
}

type Listener<Args> = Args extends unknown[] ? (...args: Args) => void : never;

/**
 * `on`, `once` or `off` of an emitter `T` whose own events are `E`, over the events `Base` of the
 * stream it is. An own event takes only a listener of its arguments; a base event's listener is
 * typed as Node types it, and like Node any listener is taken for it (`new Promise((r) =>
 * s.once('finish', r))`), as for any name not declared.
 */
export type Listen<E, T, Base = {}> = {
  <K extends keyof E>(event: K, listener: Listener<E[K]>): T;
  <K extends keyof Base>(event: K, listener: Listener<Base[K]>): T;
  <N extends string | symbol>(event: Exclude<N, keyof E>, listener: (...args: any[]) => void): T;
};
