/**
 * The files output on a disk that fills up: a short write (fewer bytes than asked, no error) and
 * then ENOSPC. Nothing acknowledged may be missing from disk, no line may be torn, and a torn tail
 * left by a crash is cut before appending. Two ways to fill a disk: a fault-injecting file handle
 * (test/fixtures/disk-full.mjs, everywhere) and a real small tmpfs (where this machine may mount one).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { checkpoint, ErrorCodes, fileSink, toFiles, type CheckpointEnvelope, type Envelope } from '../../lib/index.js';
import { generateChanges } from '../../lib/sources/generator/generator.js';
// @ts-expect-error: a plain .mjs fixture (also loaded into spawned processes with --import)
import { injectDiskFull } from '../fixtures/disk-full.mjs';
import { DSTREAM_BIN, fixture, spawnNode } from '../support/process.js';

type Injected = { state: { shortWrites: number; refused: number }; free(bytes: number): void; restore(): void };

const row = (table: string, n: number): Envelope => ({ source: 't', type: 'cdc', data: { n, pad: 'x'.repeat(200) }, metadata: { TableName: table } });
const fileLines = (path: string) => readFileSync(path, 'utf8').split('\n');

/** Every line of every file in `dir`, parsed; a torn line fails the parse. */
function rowsIn(dir: string): Envelope[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.ndjson'))
    .flatMap((f) => {
      const text = readFileSync(join(dir, f), 'utf8');
      expect(text === '' || text.endsWith('\n'), `${f} ends in a torn line`).toBe(true);
      return text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Envelope);
    });
}

describe('files output on a full disk (fault-injecting file handle)', () => {
  it('a short write is completed or fails; only what is whole on disk is acknowledged; no torn line is left', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-full-'));
    const disk = (await injectDiskFull({ dir, bytes: 400_000 })) as Injected;
    const acked: CheckpointEnvelope[] = [];
    const input: Envelope[] = [];
    for (let i = 0; i < 2000; i++) {
      input.push(row(['A', 'B'][i % 2]!, i));
      if (i % 10 === 9) input.push(checkpoint(i + 1));
    }
    try {
      const err = await pipeline(Readable.from(input), toFiles({ dir, onCheckpoint: (cp) => void acked.push(cp) })).then(
        () => undefined,
        (e: unknown) => e as { code?: string; message: string },
      );
      expect(disk.state.shortWrites).toBeGreaterThanOrEqual(1);
      expect(err?.code).toBe(ErrorCodes.IO);
      expect(err?.message).toMatch(/ENOSPC.*the disk is full/);
    } finally {
      disk.restore();
    }
    const onDisk = rowsIn(dir);
    const last = (acked.at(-1)?.data.position as number | undefined) ?? 0;
    const have = new Set(onDisk.map((e) => (e.data as { n: number }).n));
    // Every row before the last acknowledged checkpoint is whole on disk.
    for (let n = 0; n < last; n++) expect(have.has(n), `row ${n} acknowledged but not on disk`).toBe(true);
    expect(acked.length).toBeGreaterThan(0);
  });

  it('destroyed between a short write and the rest of the batch (another sink failed first): the batch is cut, no torn line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-short-destroy-'));
    const disk = (await injectDiskFull({ dir, bytes: 100 })) as Injected;
    const sink = fileSink({ dir, destination: 'A_cdc_events' });
    const errors: Error[] = [];
    sink.on('error', (err) => errors.push(err));
    // The pipeline destroys every sink once one fails: here, while this sink's write was short.
    const probe = await open(join(dir, '.probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { write: (...args: unknown[]) => Promise<unknown> };
    await probe.close();
    const write = proto.write;
    proto.write = function (this: unknown, ...args: unknown[]) {
      const shortBefore = disk.state.shortWrites;
      const p = write.apply(this, args);
      if (disk.state.shortWrites > shortBefore) sink.destroy();
      return p;
    };
    try {
      sink.write(row('A', 1));
      await new Promise((resolve) => sink.on('close', resolve));
    } finally {
      proto.write = write;
      disk.restore();
    }
    expect(disk.state.shortWrites).toBe(1);
    expect(readFileSync(join(dir, 'A_cdc_events.ndjson'), 'utf8')).toBe('');
    expect(errors).toEqual([]);
  });

  it('a torn last line (a crash in the middle of a write) is cut when the file is opened, before appending', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-torn-'));
    const path = join(dir, 'A_cdc_events.ndjson');
    writeFileSync(path, `${JSON.stringify(row('A', 1))}\n${JSON.stringify(row('A', 2)).slice(0, 37)}`);
    const sink = fileSink({ dir, destination: 'A_cdc_events' });
    const repaired: unknown[] = [];
    sink.on('repaired', (r) => repaired.push(r));
    await pipeline(Readable.from([row('A', 2), row('A', 3)]), sink);
    expect(fileLines(path).filter(Boolean).map((l) => (JSON.parse(l) as Envelope).data)).toEqual([row('A', 1).data, row('A', 2).data, row('A', 3).data]);
    expect(repaired).toEqual([{ path, cutBytes: 37 }]);
  });

  it('through `dstream run`: the run fails on the full disk, a rerun after space is freed loses nothing acknowledged and leaves no torn line', async () => {
    const base = mkdtempSync(join(tmpdir(), 'dstream-run-full-'));
    const out = join(base, 'out');
    const config = join(base, 'dstream.hcl');
    writeFileSync(config, `task "demo" {\n  input {\n    provider = "generator"\n    config {\n      count = 3000\n    }\n  }\n  output {\n    provider = "files"\n    config {\n      dir = "${out}"\n    }\n  }\n}\n`);
    const env = { DSTREAM_STATE_DIR: join(base, 'state'), NODE_OPTIONS: `--import=${fixture('disk-full.mjs')}`, DSTREAM_TEST_DISK_DIR: out, DSTREAM_TEST_DISK_BYTES: '150000' };
    const first = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', config, '--quiet'], { env, timeoutMs: 25_000 });
    expect(first.code).toBe(1);
    expect(first.stderr).toMatch(/ENOSPC/);
    const stored = storedRows(base);
    expect(rowsIn(out).length).toBeGreaterThanOrEqual(stored);
    const again = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', config, '--quiet'], { env: { ...env, DSTREAM_TEST_DISK_BYTES: '100000000' }, timeoutMs: 25_000 });
    expect(again.code, again.stderr).toBe(0);
    expectAllDelivered(out, 3000);
  }, 60_000);
});

/** Rows covered by the stored position of the generator task. */
function storedRows(base: string): number {
  try {
    return (JSON.parse(readFileSync(join(base, 'state', 'tasks', 'demo.json'), 'utf8')) as { position: { rows: number } }).position.rows;
  } catch {
    return 0;
  }
}

/** Every generated row of the first `count` is on disk, whole, in order per table. */
function expectAllDelivered(out: string, count: number): void {
  const all = [...generateChanges({ seed: 1, count })].filter((e) => e.type !== 'checkpoint');
  const key = (e: Envelope) => `${e.metadata?.TableName}|${e.metadata?.LSN}|${e.metadata?.Seq}`;
  const got = rowsIn(out);
  const keys = new Set(got.map(key));
  const lost = all.filter((e) => !keys.has(key(e)));
  expect(lost.length, `lost ${lost.length} rows`).toBe(0);
}

// A real full disk: a 96 KiB tmpfs, where this machine lets the tests mount one.
const mounts: string[] = [];
function mountTmpfs(size: string): string | { skip: string } {
  const where = mkdtempSync(join(tmpdir(), 'dstream-tmpfs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', where], { stdio: 'pipe' });
  } catch (err) {
    rmSync(where, { recursive: true, force: true });
    return { skip: `cannot mount a tmpfs here (${(err as Error).message.split('\n')[0]}); the fault-injecting handle covers the same case` };
  }
  mounts.push(where);
  return where;
}
afterAll(() => {
  for (const m of mounts) {
    execFileSync('umount', [m], { stdio: 'pipe' });
    rmSync(m, { recursive: true, force: true });
  }
});

describe('files output on a full disk (a real small tmpfs)', () => {
  it('library: checkpoints acknowledged only for rows whole on disk; no torn line', async (ctx) => {
    const where = mountTmpfs('96k');
    if (typeof where !== 'string') return ctx.skip(where.skip);
    const acked: CheckpointEnvelope[] = [];
    const input: Envelope[] = [];
    for (let i = 0; i < 2000; i++) {
      input.push(row(['A', 'B', 'C'][i % 3]!, i));
      if (i % 7 === 6) input.push(checkpoint(i + 1));
    }
    const err = await pipeline(Readable.from(input), toFiles({ dir: where, onCheckpoint: (cp) => void acked.push(cp) })).then(
      () => undefined,
      (e: unknown) => e as { code?: string; message: string },
    );
    expect(err?.code).toBe(ErrorCodes.IO);
    const have = new Set(rowsIn(where).map((e) => (e.data as { n: number }).n));
    const last = (acked.at(-1)?.data.position as number | undefined) ?? 0;
    for (let n = 0; n < last; n++) expect(have.has(n), `row ${n} acknowledged but not on disk`).toBe(true);
  });

  it('`dstream run` into a tmpfs that fills, then grows: nothing acknowledged lost, no torn line', async (ctx) => {
    const where = mountTmpfs('160k');
    if (typeof where !== 'string') return ctx.skip(where.skip);
    const base = mkdtempSync(join(tmpdir(), 'dstream-run-tmpfs-'));
    const out = join(where, 'out');
    mkdirSync(out);
    const config = join(base, 'dstream.hcl');
    writeFileSync(config, `task "demo" {\n  input {\n    provider = "generator"\n    config {\n      count = 3000\n    }\n  }\n  output {\n    provider = "files"\n    config {\n      dir = "${out}"\n    }\n  }\n}\n`);
    const env = { DSTREAM_STATE_DIR: join(base, 'state') };
    const first = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', config, '--quiet'], { env, timeoutMs: 25_000 });
    expect(first.code).toBe(1);
    expect(first.stderr).toMatch(/ENOSPC|no space/);
    execFileSync('mount', ['-o', 'remount,size=16m', where], { stdio: 'pipe' });
    const again = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', config, '--quiet'], { env, timeoutMs: 25_000 });
    expect(again.code, again.stderr).toBe(0);
    expectAllDelivered(out, 3000);
  }, 60_000);
});
