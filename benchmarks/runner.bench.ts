/**
 * The task runner's tax: `dstream run` of the built-in generator into files against the same
 * pipeline composed from the library in a script (generateChanges -> toFiles), both as processes,
 * start-up included. Also start-up alone: `import('dstream')` and `dstream validate`.
 * BENCH_DSTREAM_ROOT points at another checkout (built) to measure it instead, for before/after.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { race, runProcess, type BenchResult, type Contender, type Measurement } from './harness.js';

const ROOT = process.env.BENCH_DSTREAM_ROOT ?? fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'dist/bin/dstream.js');
const LIBRARY = fileURLToPath(new URL('./baselines/generator-to-files.mjs', import.meta.url));

function taskFile(dir: string, rows: number): string {
  const path = join(dir, 'dstream.hcl');
  writeFileSync(
    path,
    `task "bench" {\n  type = "providers"\n  input {\n    provider = "generator"\n    config {\n      count = ${rows}\n      seed = 1\n    }\n  }\n  output {\n    provider = "files"\n    config {\n      dir = "${join(dir, 'out')}"\n    }\n  }\n}\n`,
  );
  return path;
}

/** A fresh directory per round: the run starts with no stored position and no files. */
function fresh(): string {
  return mkdtempSync(join(tmpdir(), 'dstream-bench-run-'));
}

async function inFresh(run: (dir: string) => Promise<number>): Promise<number> {
  const dir = fresh();
  try {
    return await run(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function run(rows: number, rounds: number): Promise<BenchResult> {
  const group = `generator -> files, ${rows.toLocaleString('en-US')} rows (process, start-up included)`;
  const contenders: Contender[] = [
    {
      name: 'dstream run',
      run: () => inFresh((dir) => runProcess(process.execPath, [BIN, 'run', 'bench', '--config', taskFile(dir, rows), '--quiet'], '/dev/null', { DSTREAM_STATE_DIR: join(dir, 'state') })),
    },
    {
      name: 'library pipeline (generateChanges -> toFiles)',
      run: () => inFresh((dir) => runProcess(process.execPath, [LIBRARY, String(rows), join(dir, 'out')], '/dev/null', { DSTREAM_ROOT: ROOT })),
    },
  ];
  const startup: Contender[] = [
    { name: "import('dstream')", run: () => runProcess(process.execPath, ['--input-type=module', '-e', `await import(${JSON.stringify(join(ROOT, 'dist/lib/index.js'))})`], '/dev/null') },
    { name: 'dstream validate', run: () => inFresh((dir) => runProcess(process.execPath, [BIN, 'validate', '--config', taskFile(dir, rows)], '/dev/null')) },
    { name: 'node (empty script)', run: () => runProcess(process.execPath, ['-e', '0'], '/dev/null') },
  ];
  const measure = async (g: string, cs: Contender[], lines: number): Promise<Measurement[]> => {
    const medians = await race(cs, rounds);
    return cs.map((c) => ({ group: g, name: c.name, ms: medians.get(c.name)!.ms, rounds: medians.get(c.name)!.rounds, lines, bytes: 0, peakRssMB: medians.get(c.name)!.peak }));
  };
  const measurements = [...(await measure(group, contenders, rows)), ...(await measure('start-up', startup, 1))];
  return {
    measurements,
    targets: [
      {
        group,
        subject: 'dstream run',
        baseline: 'library pipeline (generateChanges -> toFiles)',
        minRatio: 0.8,
        text: '`dstream run` (built-in generator -> files) >= 0.8x the same library pipeline',
      },
    ],
    notes: [
      'Both write one NDJSON file per table, fsynced before checkpoints are acknowledged; `dstream run` also stores the last acknowledged position.',
      'Start-up rows: lines/s is 1000 / best ms (one start per round); read the ms and peak RSS columns.',
    ],
  };
}
