/**
 * The one format of a stored position, as a file: `{"task", "position", "source", "savedAt"}`, one
 * JSON line, written atomically. The executor's file store (`<state dir>/tasks/<task>.json`),
 * `asb-sink --state-file` and `mssql-cdc --state-file` all write and read it through here.
 *
 * Files asb-sink wrote before it used this format, `{"checkpoint": <checkpoint envelope>, "savedAt"}`,
 * are read as the same state, so a pipe upgraded in place resumes where it was.
 */
import { DstreamError, ErrorCodes } from '../errors.js';
import { readStateText, removeStaleTemps, writeFileAtomic } from './atomic-file.js';

export interface StoredState {
  /** The task whose position this is (absent in a state file of a pipe run without one). */
  task?: string;
  /** The input provider's opaque position. */
  position: unknown;
  /** The input that emitted it, as its checkpoints name it. */
  source?: string;
  savedAt: string;
}

/** The state to store for a position now. */
export function storedState(position: unknown, options: { task?: string | undefined; source?: string | undefined; now?: Date } = {}): StoredState {
  return {
    ...(options.task !== undefined ? { task: options.task } : {}),
    position,
    ...(options.source !== undefined ? { source: options.source } : {}),
    savedAt: (options.now ?? new Date()).toISOString(),
  };
}

/** A state file's content; throws a plain Error saying what is wrong with it. */
export function parseStoredState(text: string): StoredState {
  const v = JSON.parse(text) as unknown;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
  const o = v as Record<string, unknown>;
  if ('position' in o) return o as unknown as StoredState;
  const cp = o.checkpoint as { source?: unknown; data?: { position?: unknown } } | undefined;
  if (cp !== null && typeof cp === 'object' && cp.data !== null && typeof cp.data === 'object' && 'position' in cp.data) {
    // asb-sink's earlier format.
    return {
      position: cp.data.position,
      ...(typeof cp.source === 'string' ? { source: cp.source } : {}),
      savedAt: typeof o.savedAt === 'string' ? o.savedAt : '',
    };
  }
  throw new Error('no "position"');
}

/**
 * The state stored in `path`, or undefined when there is none yet. Temp files of saves cut short by
 * a kill are removed first. A file that is not a state file is DSTREAM_ERR_IO, naming the path,
 * what is wrong, and `remedy` (what the user can do about it).
 */
export async function readStateFile(path: string, remedy: string): Promise<StoredState | undefined> {
  await removeStaleTemps(path);
  const text = await readStateText(path);
  if (text === undefined) return undefined;
  try {
    return parseStoredState(text);
  } catch (err) {
    throw new DstreamError(ErrorCodes.IO, `${path} is not a dstream state file (${(err as Error).message}); ${remedy}`, { cause: err, details: { path } });
  }
}

/** Writes `state` to `path` atomically (temp file, fsync, rename). */
export async function writeStateFile(path: string, state: StoredState): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(state)}\n`);
}
