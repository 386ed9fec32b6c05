/**
 * Where a task's last acknowledged checkpoint is kept. The file store writes
 * `<state dir>/tasks/<task>.json` atomically (temp file, fsync, rename), so a crash leaves the old
 * position or the new, never a torn one. Other stores (a SQL Server table) implement the same
 * interface.
 */
import { access, mkdir, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { DstreamError, ErrorCodes, invalidOption } from '../errors.js';
import { readStateText, removeStaleTemps, writeFileAtomic } from './atomic-file.js';

export interface StoredState {
  task: string;
  /** The input provider's opaque position. */
  position: unknown;
  source?: string;
  savedAt: string;
}

export interface StateStore {
  load(task: string): Promise<StoredState | undefined>;
  save(task: string, position: unknown, source?: string): Promise<StoredState>;
  /** Forgets the position; true when there was one. */
  reset(task: string): Promise<boolean>;
  /** Releases connections (stores backed by a database). */
  close?(): Promise<void>;
  /** What kind of store this is (sent to the input as `store` in its run header). */
  describe?(): StoreDescriptor;
}

/** Where positions are kept, as an input provider is told: `{"kind":"file"}`, `{"kind":"sqlserver","table":"dstream.checkpoints"}`. */
export interface StoreDescriptor {
  kind: string;
  table?: string;
}

/** `$DSTREAM_STATE_DIR`, else `~/.dstream`. */
export function defaultStateDir(env: Record<string, string | undefined> = process.env): string {
  return env.DSTREAM_STATE_DIR || join(homedir(), '.dstream');
}

export class FileStateStore implements StateStore {
  constructor(readonly dir: string = defaultStateDir()) {}

  describe(): StoreDescriptor {
    return { kind: 'file' };
  }

  pathOf(task: string): string {
    if (typeof task !== 'string' || task.length === 0) throw invalidOption('a task name is needed to store its position');
    // Any task name maps to one safe file name, and distinct names to distinct files.
    return join(this.dir, 'tasks', `${encodeURIComponent(task).replace(/\./g, '%2E')}.json`);
  }

  async load(task: string): Promise<StoredState | undefined> {
    const path = this.pathOf(task);
    // Saves cut short by a kill leave their temp files: clear them as the task starts.
    await removeStaleTemps(path);
    const text = await readStateText(path);
    if (text === undefined) return undefined;
    try {
      const state = JSON.parse(text) as StoredState;
      if (state === null || typeof state !== 'object' || !('position' in state)) throw new Error('no "position"');
      return state;
    } catch (err) {
      throw new DstreamError(
        ErrorCodes.IO,
        `${path} is not a dstream state file (${(err as Error).message}); fix it, or forget the position with \`dstream reset ${task}\``,
        { cause: err, details: { path } },
      );
    }
  }

  async save(task: string, position: unknown, source?: string): Promise<StoredState> {
    const path = this.pathOf(task);
    await mkdir(join(this.dir, 'tasks'), { recursive: true });
    const state: StoredState = { task, position, ...(source !== undefined ? { source } : {}), savedAt: new Date().toISOString() };
    await writeFileAtomic(path, `${JSON.stringify(state)}\n`);
    return state;
  }

  /** Forgets the position; true when there was one. A damaged file is forgotten too: it is not read. */
  async reset(task: string): Promise<boolean> {
    const path = this.pathOf(task);
    const existed = await access(path).then(() => true, (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return false;
      throw new DstreamError(ErrorCodes.IO, `could not reach ${path}: ${err.message}`, { cause: err, details: { path } });
    });
    await rm(path, { force: true });
    return existed;
  }
}
