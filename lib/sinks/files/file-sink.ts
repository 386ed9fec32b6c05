/**
 * fileSink(): envelopes -> `<dir>/<destination>.ndjson`, appended. Writes queued while a write
 * is in progress are taken together (_writev) as one write and one fsync, and the write callbacks
 * come only after the fsync: a checkpoint behind these records is acknowledged only once they are
 * on disk (see the sink contract in streams/partition.ts).
 */
import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { DstreamError, ErrorCodes, invalidOption } from '../../errors.js';
import type { Envelope } from '../../envelope/types.js';
import { entityNameProblem } from '../../streams/destination.js';

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

export class FileSink extends Writable {
  readonly path: string;
  private handle: FileHandle | null = null;
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
      .then(() => open(this.path, 'a'))
      .then((h) => {
        this.handle = h;
        callback();
      }, (err: Error) => callback(this.fail('open', err)));
  }

  override _write(env: Envelope, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.append(`${JSON.stringify(env)}\n`, 1).then(() => callback(), callback);
  }

  override _writev(chunks: Array<{ chunk: Envelope }>, callback: (err?: Error | null) => void): void {
    let text = '';
    for (const c of chunks) text += `${JSON.stringify(c.chunk)}\n`;
    this.append(text, chunks.length).then(() => callback(), callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.close().then(() => callback(), callback);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.close().then(() => callback(err), (closeErr: Error) => callback(err ?? closeErr));
  }

  private async append(text: string, records: number): Promise<void> {
    const data = Buffer.from(text, 'utf8');
    try {
      await this.handle!.write(data);
      if (!this.options.noSync) {
        await this.handle!.sync();
        this.counts.syncs++;
        this.emit('sync', records);
      }
    } catch (err) {
      throw this.fail('write', err as Error);
    }
    this.counts.records += records;
    this.counts.bytes += data.length;
  }

  private async close(): Promise<void> {
    const h = this.handle;
    this.handle = null;
    if (h !== null) await h.close();
  }

  private fail(what: string, err: Error): DstreamError {
    return new DstreamError(ErrorCodes.IO, `could not ${what} ${this.path}: ${err.message}`, {
      cause: err,
      details: { path: this.path, destination: this.options.destination },
    });
  }
}

/** A Writable of envelopes appending to `<dir>/<destination>.ndjson`, fsynced before each callback. */
export function fileSink(options: FileSinkOptions): FileSink {
  return new FileSink(options);
}
