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
import { readStateFile, storedState, writeStateFile, type StoredState } from './state-file.js';

export type { StoredState };

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
    // Saves cut short by a kill leave their temp files: they are cleared as the task starts.
    return readStateFile(this.pathOf(task), `fix it, or forget the position with \`dstream reset ${task}\``);
  }

  async save(task: string, position: unknown, source?: string): Promise<StoredState> {
    const path = this.pathOf(task);
    await mkdir(join(this.dir, 'tasks'), { recursive: true });
    const state = storedState(position, { task, source });
    await writeStateFile(path, state);
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
