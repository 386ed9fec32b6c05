/**
 * fileSink(): envelopes -> `<dir>/<destination>.ndjson`, appended. Writes queued while a write
 * is in progress are taken together (_writev) as one write and one fsync, and the write callbacks
 * come only after the fsync: a checkpoint behind these records is acknowledged only once they are
 * on disk (see the sink contract in streams/partition.ts).
 *
 * A full disk does not fail a write at once: write() returns fewer bytes than asked (a short
 * write), and only the next one fails with ENOSPC. So the sink writes until every byte is written
 * or a write fails, and on failure cuts the file back to where the batch began: no line is half
 * on disk, and nothing of the batch is acknowledged. A file left with a torn last line (a crash
 * in the middle of a write) has that line cut when the sink opens it, before it appends.
 */
import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { DstreamError, ErrorCodes, invalidOption } from '../../errors.js';
import type { Envelope } from '../../envelope/types.js';
import { entityNameProblem } from '../../streams/destination.js';
import type { Listen, WritableEvents } from '../../events.js';

export interface FileSinkOptions {
  /** Directory of the files; created when missing. */
  dir: string;
  destination: string;
  /** Skip fsync (faster, not durable across a machine crash). Default false. */
  noSync?: boolean;
  highWaterMark?: number;
}

export interface FileSinkStats {
  destination: string;
  path: string;
  records: number;
  bytes: number;
  syncs: number;
}

/** `fileSink()`'s events besides a Writable's: `'sync'` after each fsync with the records it made durable; `'repaired'` when a torn last line was cut on open. */
export interface FileSinkEvents {
  sync: [records: number];
  repaired: [repair: { path: string; cutBytes: number }];
}

export interface FileSink {
  on: Listen<FileSinkEvents, this, WritableEvents>;
  once: Listen<FileSinkEvents, this, WritableEvents>;
  off: Listen<FileSinkEvents, this, WritableEvents>;
}

export class FileSink extends Writable {
  readonly path: string;
  private handle: FileHandle | null = null;
  /** Bytes of the file known whole: where the next batch begins. */
  private size = 0;
  /** The write in progress, settled (never rejects); undefined before the first. */
  private inFlight: Promise<void> | undefined;
  private readonly options: FileSinkOptions;
  private readonly counts: FileSinkStats;

  constructor(options: FileSinkOptions) {
    // Checked before super(): Writable schedules _construct (which opens the file) as it is built.
    FileSink.check(options);
    super({ objectMode: true, highWaterMark: options.highWaterMark ?? 256 });
    this.options = options;
    this.path = join(options.dir, `${options.destination}.ndjson`);
    this.counts = { destination: options.destination, path: this.path, records: 0, bytes: 0, syncs: 0 };
  }

  private static check(options: FileSinkOptions): void {
    if (typeof options?.dir !== 'string' || options.dir.length === 0) throw invalidOption('fileSink needs a directory');
    // Destinations follow the queue name rules; '/' is allowed there but would leave the directory.
    const problem = entityNameProblem(options.destination) ?? (options.destination.includes('/') ? 'contains "/"' : undefined);
    if (problem !== undefined) throw invalidOption(`fileSink: destination "${options.destination}" ${problem}`);
  }

  get stats(): FileSinkStats {
    return { ...this.counts };
  }

  override _construct(callback: (err?: Error | null) => void): void {
    mkdir(this.options.dir, { recursive: true })
      // r+ (not a): a torn tail is cut in place, and writes go to the position the sink keeps.
      .then(() => open(this.path, 'a').then((h) => h.close()))
      .then(() => open(this.path, 'r+'))
      .then(async (h) => {
        this.handle = h;
        this.size = await this.cutTornTail(h);
        callback();
      }, (err: Error) => callback(this.fail('open', err)));
  }

  override _write(env: Envelope, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.appending(`${JSON.stringify(env)}\n`, 1, callback);
  }

  override _writev(chunks: Array<{ chunk: Envelope }>, callback: (err?: Error | null) => void): void {
    let text = '';
    for (const c of chunks) text += `${JSON.stringify(c.chunk)}\n`;
    this.appending(text, chunks.length, callback);
  }

  /** append(), kept as the write in progress from before its first byte: closing waits for it (see close()). */
  private appending(text: string, records: number, callback: (err?: Error | null) => void): void {
    let settled!: () => void;
    this.inFlight = new Promise<void>((resolve) => (settled = resolve));
    this.append(text, records).then(
      () => (settled(), callback()),
      (err: Error) => (settled(), callback(err)),
    );
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.close().then(() => callback(), callback);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.close().then(() => callback(err), (closeErr: Error) => callback(err ?? closeErr));
  }

  private async append(text: string, records: number): Promise<void> {
    const data = Buffer.from(text, 'utf8');
    const h = this.handle!;
    const start = this.size;
    try {
      // A short write is not an error (a disk that fills does that first): write the rest, until
      // every byte is written or a write fails.
      for (let done = 0; done < data.length; ) {
        const { bytesWritten } = await h.write(data, done, data.length - done, start + done);
        if (bytesWritten <= 0) throw Object.assign(new Error(`no space left: wrote ${done} of ${data.length} bytes`), { code: 'ENOSPC' });
        done += bytesWritten;
      }
      if (!this.options.noSync) {
        await h.sync();
        this.counts.syncs++;
        this.emit('sync', records);
      }
    } catch (err) {
      // Nothing of this batch is acknowledged; leave no part of it on disk either.
      const cut = await h.truncate(start).then(
        () => '',
        (truncErr: Error) => `; the file may end in a torn line, cut when it is next opened (${truncErr.message})`,
      );
      throw this.fail('write', err as Error, cut);
    }
    this.size = start + data.length;
    this.counts.records += records;
    this.counts.bytes += data.length;
  }

  /** Cuts a last line without its newline (a crash mid-write); returns the size kept. */
  private async cutTornTail(h: FileHandle): Promise<number> {
    const { size } = await h.stat();
    if (size === 0) return 0;
    const chunk = Buffer.alloc(64 * 1024);
    let end = size;
    let kept = -1;
    while (end > 0 && kept < 0) {
      const from = Math.max(0, end - chunk.length);
      const { bytesRead } = await h.read(chunk, 0, end - from, from);
      const nl = chunk.subarray(0, bytesRead).lastIndexOf(0x0a);
      if (nl >= 0) kept = from + nl + 1;
      end = from;
    }
    if (kept < 0) kept = 0;
    if (kept === size) return size;
    await h.truncate(kept);
    await h.sync();
    this.emit('repaired', { path: this.path, cutBytes: size - kept });
    return kept;
  }

  /**
   * Closes the file once the write in progress has finished. Destroyed in the middle of a batch (the
   * pipeline destroys every sink once one fails), the batch still ends whole or cut back to where it
   * began: closing under it would leave the rest unwritten and the cut impossible, a torn line.
   */
  private async close(): Promise<void> {
    await this.inFlight;
    const h = this.handle;
    this.handle = null;
    if (h !== null) await h.close();
  }

  private fail(what: string, err: Error, more = ''): DstreamError {
    const hint = (err as NodeJS.ErrnoException).code === 'ENOSPC' ? '; the disk is full: free space and run again (rows not on disk were not acknowledged)' : '';
    return new DstreamError(ErrorCodes.IO, `could not ${what} ${this.path}: ${err.message}${hint}${more}`, {
      cause: err,
      details: { path: this.path, destination: this.options.destination },
    });
  }
}

/** A Writable of envelopes appending to `<dir>/<destination>.ndjson`, fsynced before each callback. */
export function fileSink(options: FileSinkOptions): FileSink {
  return new FileSink(options);
}
