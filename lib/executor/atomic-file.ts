/**
 * Writes a file so that a reader sees the old content or the new, never a torn one, even across
 * a crash: temp file in the same directory, fsync, rename over the target, fsync the directory.
 */
import { open, rename, rm } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { DstreamError, ErrorCodes } from '../errors.js';

export async function writeFileAtomic(path: string, data: string): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  try {
    const h = await open(tmp, 'w');
    try {
      await h.writeFile(data, 'utf8');
      await h.sync();
    } finally {
      await h.close();
    }
    await rename(tmp, path);
    const d = await open(dirname(path), 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch (err) {
    await rm(tmp, { force: true });
    throw new DstreamError(ErrorCodes.IO, `could not write ${path}: ${(err as Error).message}`, { cause: err, details: { path } });
  }
}
