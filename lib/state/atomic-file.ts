/**
 * Writes a file so that a reader sees the old content or the new, never a torn one, even across
 * a crash: temp file in the same directory (`.<name>.<pid>.tmp`), fsync, rename over the target,
 * fsync the directory. A process killed during a save leaves its temp file behind:
 * removeStaleTemps() clears those of processes no longer running.
 */
import { open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { DstreamError, ErrorCodes, messageOf } from '../errors.js';

const tempOf = (path: string, pid: number) => join(dirname(path), `.${basename(path)}.${pid}.tmp`);

export async function writeFileAtomic(path: string, data: string): Promise<void> {
  const tmp = tempOf(path, process.pid);
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
    // The write's failure is what the user must see; a failed cleanup is only added to it.
    const cleanup = await rm(tmp, { force: true }).then(
      () => '',
      (rmErr: unknown) => `; the temp file ${tmp} could not be removed either (${messageOf(rmErr)})`,
    );
    throw new DstreamError(ErrorCodes.IO, `could not write ${path}: ${messageOf(err)}${cleanup}`, { cause: err, details: { path } });
  }
}

/** Removes `.<name>.<pid>.tmp` files beside `path` left by processes that are gone; returns their names. */
export async function removeStaleTemps(path: string): Promise<string[]> {
  const dir = dirname(path);
  const prefix = `.${basename(path)}.`;
  const names = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [] as string[];
    throw err;
  });
  const removed: string[] = [];
  for (const name of names) {
    if (!name.startsWith(prefix) || !name.endsWith('.tmp')) continue;
    const pid = Number(name.slice(prefix.length, -'.tmp'.length));
    if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || isRunning(pid)) continue;
    await rm(join(dir, name), { force: true });
    removed.push(name);
  }
  return removed;
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it runs, as someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A state file's text, or undefined when there is none yet; any other failure is DSTREAM_ERR_IO. */
export async function readStateText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new DstreamError(ErrorCodes.IO, `could not read ${path}: ${messageOf(err)}`, { cause: err, details: { path } });
  }
}
