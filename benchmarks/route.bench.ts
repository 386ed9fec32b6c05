/**
 * `dstream route` as a process (stdin file -> stdout /dev/null) against a minimal hand-written
 * parse + stamp + stringify loop and `jq -c` where installed, plus peak RSS.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { statSync } from 'node:fs';
import { cdcFile } from './cdc-data.js';
import { race, runProcess, type BenchResult, type Contender, type Measurement } from './harness.js';

const BIN = fileURLToPath(new URL('../dist/bin/dstream.js', import.meta.url));
const LOOP = fileURLToPath(new URL('./baselines/route-loop.mjs', import.meta.url));

function hasJq(): boolean {
  try {
    execFileSync('jq', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false; // reported in the notes as "jq not installed"
  }
}

export async function run(lines: number, rounds: number): Promise<BenchResult> {
  const path = await cdcFile(lines);
  const bytes = statSync(path).size;
  const contenders: Contender[] = [
    { name: 'dstream route', run: () => runProcess(process.execPath, [BIN, 'route', '--quiet'], path) },
    { name: 'hand-written parse+stamp+stringify', run: () => runProcess(process.execPath, [LOOP], path) },
  ];
  const jq = hasJq();
  if (jq) {
    contenders.push({
      name: 'jq -c',
      run: () => runProcess('jq', ['-c', 'if .type == "checkpoint" then . else .metadata.Destination = (.metadata.TableName + "_cdc_events") end'], path),
    });
  }
  const medians = await race(contenders, rounds);
  const measurements: Measurement[] = contenders.map((c) => ({
    group: 'route (process)',
    name: c.name,
    ms: medians.get(c.name)!.ms,
    rounds: medians.get(c.name)!.rounds,
    lines,
    bytes,
    peakRssMB: medians.get(c.name)!.peak,
  }));
  return {
    measurements,
    targets: [
      {
        group: 'route (process)',
        subject: 'dstream route',
        baseline: 'hand-written parse+stamp+stringify',
        minRatio: 0.8,
        text: '`dstream route` >= 0.8x the hand-written loop',
      },
      { group: 'route (process)', subject: 'dstream route', maxRssMB: 150, text: `peak RSS of \`dstream route\` on ${lines.toLocaleString('en-US')} lines < 150 MB` },
    ],
    notes: jq ? [] : ['jq not installed: its row is left out.'],
  };
}
