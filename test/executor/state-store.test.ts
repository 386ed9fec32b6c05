import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../lib/index.js';
import { defaultStateDir, FileStateStore } from '../../lib/state/state-store.js';

describe('FileStateStore', () => {
  it('saves, loads and resets a task position, leaving no temp files', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-state-'));
    const store = new FileStateStore(dir);
    expect(await store.load('mssql-to-asb')).toBeUndefined();
    await store.save('mssql-to-asb', { lsn: '0x01' }, 'mssql-cdc');
    const saved = await store.save('mssql-to-asb', { lsn: '0x02' }, 'mssql-cdc');
    expect(await store.load('mssql-to-asb')).toEqual(saved);
    expect(saved).toMatchObject({ task: 'mssql-to-asb', position: { lsn: '0x02' }, source: 'mssql-cdc' });
    expect(readdirSync(join(dir, 'tasks'))).toEqual(['mssql-to-asb.json']);
    expect(await store.reset('mssql-to-asb')).toBe(true);
    expect(await store.reset('mssql-to-asb')).toBe(false);
    expect(await store.load('mssql-to-asb')).toBeUndefined();
  });

  it('keeps tasks apart whatever their names, without leaving the directory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-state-'));
    const store = new FileStateStore(dir);
    for (const name of ['a/b', 'a_b', '..', 'x y']) await store.save(name, name);
    for (const name of ['a/b', 'a_b', '..', 'x y']) expect((await store.load(name))?.position).toBe(name);
    expect(readdirSync(join(dir, 'tasks'))).toHaveLength(4);
  });

  it('names a damaged state file and how to recover', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-state-'));
    const store = new FileStateStore(dir);
    await store.save('t', 1);
    writeFileSync(store.pathOf('t'), '{"posi');
    const err = await store.load('t').catch((e) => e);
    expect(err.code).toBe(ErrorCodes.IO);
    expect(err.message).toMatch(/t\.json is not a dstream state file \(.+\); fix it, or forget the position with `dstream reset t`$/);
  });

  it('reset forgets a damaged state file (the very thing its error message tells you to run)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-state-'));
    const store = new FileStateStore(dir);
    await store.save('t', 1);
    writeFileSync(store.pathOf('t'), '{"posi');
    expect(await store.reset('t')).toBe(true);
    expect(await store.load('t')).toBeUndefined();
  });

  it('defaults to DSTREAM_STATE_DIR, else ~/.dstream', () => {
    expect(defaultStateDir({ DSTREAM_STATE_DIR: '/srv/dstream' })).toBe('/srv/dstream');
    expect(defaultStateDir({})).toMatch(/\.dstream$/);
  });
});
