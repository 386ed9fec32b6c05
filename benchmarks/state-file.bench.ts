/**
 * `asb-sink --state-file` over a million envelopes (a checkpoint after every transaction of 1-5
 * rows): the same process with and without the state file, into the AMQP test broker in its own
 * process. With the state file it must keep up with the broker (saves coalesced to the latest
 * acknowledged checkpoint, not one fsynced file per checkpoint in sequence) and its memory must
 * stay flat (no acknowledged markers piling up behind the saves).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { cdcFile } from './cdc-data.js';
import { runProcess, type BenchResult, type Measurement } from './harness.js';

const TSX = fileURLToPath(new URL('./node_modules/tsx/dist/cli.mjs', import.meta.url));
const BROKER = fileURLToPath(new URL('./broker-process.ts', import.meta.url));
const BIN = fileURLToPath(new URL('../dist/bin/asb-sink.js', import.meta.url));
const QUEUES = ['Persons', 'Orders', 'Customers', 'OrderLines', 'Products'].map((t) => `${t}_cdc_events`);

async function startBroker(): Promise<{ cs: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [TSX, BROKER, QUEUES.join(',')], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(child.stdout!, 'data')) as [Buffer];
  const { port } = JSON.parse(line.toString()) as { port: number };
  return { cs: `Endpoint=sb://127.0.0.1:${port};SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true`, child };
}

export async function run(lines: number, rounds: number): Promise<BenchResult> {
  const path = await cdcFile(lines);
  const dir = mkdtempSync(join(tmpdir(), 'dstream-bench-state-'));
  const state = join(dir, 'state.json');
  const group = `asb-sink, ${lines.toLocaleString('en-US')} lines (rows and checkpoints)`;
  const contenders = [
    { name: 'asb-sink --state-file', args: [BIN, '--quiet', '--state-file', state] },
    { name: 'asb-sink (no state file)', args: [BIN, '--quiet'] },
  ];
  const times = new Map<string, number[]>(contenders.map((c) => [c.name, []]));
  const peaks = new Map<string, number>();
  let stored = '';
  for (let r = 0; r < rounds; r++) {
    for (const c of contenders) {
      // A fresh broker each run: it counts messages without keeping them.
      const broker = await startBroker();
      process.env.ASB_CONNECTION_STRING = broker.cs;
      rmSync(state, { force: true });
      const t0 = performance.now();
      const peak = await runProcess(process.execPath, c.args, path);
      times.get(c.name)!.push(performance.now() - t0);
      peaks.set(c.name, Math.max(peaks.get(c.name) ?? 0, peak));
      broker.child.kill('SIGTERM');
      if (c.args.includes('--state-file')) stored = readFileSync(state, 'utf8');
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const measurements: Measurement[] = contenders.map((c) => ({
    group,
    name: c.name,
    ms: median(times.get(c.name)!),
    rounds: times.get(c.name)!,
    lines,
    bytes: 0,
    peakRssMB: peaks.get(c.name),
  }));
  const last = (JSON.parse(stored) as { checkpoint: { data: { position: unknown } } }).checkpoint.data.position;
  rmSync(dir, { recursive: true, force: true });
  return {
    measurements,
    targets: [
      { group, subject: 'asb-sink --state-file', baseline: 'asb-sink (no state file)', minRatio: 0.8, text: '`asb-sink --state-file` keeps up with the broker: >= 0.8x without a state file' },
      { group, subject: 'asb-sink --state-file', maxRssMB: 150, text: `peak RSS of \`asb-sink --state-file\` over ${lines.toLocaleString('en-US')} lines < 150 MB (flat: no markers pile up)` },
    ],
    notes: [`state file after the run holds the input's last checkpoint: ${JSON.stringify(last)}.`],
  };
}
