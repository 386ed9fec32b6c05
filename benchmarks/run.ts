/**
 * npm run bench: runs every *.bench.ts, prints one table per run and writes benchmarks/RESULTS.md.
 * BENCH_LINES (default 200000) sizes the in-process runs; BENCH_ROUTE_LINES (default 1000000) the
 * process runs; BENCH_ROUNDS (default 5 in-process, 3 for processes) the timed rounds; BENCH_ONLY
 * (codec,route,mssql,mssql-tds,service-bus,runner,state-file,latency) picks sections; BENCH_CDC_COMMITS (default 150000) sizes the in-process
 * CDC reader runs; BENCH_TDS_ROWS (default 200000) the reader over the TDS test server, BENCH_TDS_BACKLOG
 * (default 1000000) its RSS run; BENCH_RUN_ROWS (default 500000) sizes the task runner runs; BENCH_STATE_LINES
 * (default 1000000) the asb-sink --state-file runs; BENCH_LATENCY_SECONDS (default 40) each steady rate of the
 * end-to-end latency runs, BENCH_LATENCY_RATES (default 1000,10000) their rates, BENCH_LATENCY_SINK=process
 * runs the task's output as the asb-sink executable (provider_path) instead of the built-in.
 */
import { cpus, totalmem } from 'node:os';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { evaluate, formatTable, markdown, type BenchResult } from './harness.js';
import * as codec from './codec.bench.js';
import * as routeProcess from './route.bench.js';
import * as serviceBus from './service-bus.bench.js';
import * as mssql from './mssql.bench.js';
import * as mssqlTds from './mssql-tds.bench.js';
import * as runner from './runner.bench.js';
import * as stateFile from './state-file.bench.js';
import * as latency from './latency.bench.js';

// Rounds start from a collected heap and the RSS runs from a full collection: without gc() every
// memory figure depends on what the rounds before left. (tsx's CLI runs the script in a child
// process without the flag, so the loader is imported here instead.)
if (typeof (globalThis as { gc?: unknown }).gc !== 'function') {
  process.stderr.write('bench: run with node --expose-gc --import ./benchmarks/node_modules/tsx/dist/esm/index.mjs benchmarks/run.ts (npm run bench does)\n');
  process.exit(2);
}

const lines = Number(process.env.BENCH_LINES ?? 200_000);
const routeLines = Number(process.env.BENCH_ROUTE_LINES ?? 1_000_000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);

const only = process.env.BENCH_ONLY?.split(',');
const sections: Array<{ title: string; result: BenchResult }> = [];
const step = async (title: string, run: () => Promise<BenchResult>, key: string) => {
  if (only !== undefined && !only.includes(key)) return;
  process.stderr.write(`bench: ${title}...\n`);
  const result = await run();
  sections.push({ title, result });
  process.stdout.write(`\n## ${title}\n\n${formatTable(result)}\n`);
};

await step(`decode and encode, in process, ${lines.toLocaleString('en-US')} lines`, () => codec.run(lines, rounds), 'codec');
await step(`dstream route as a process, ${routeLines.toLocaleString('en-US')} lines`, () => routeProcess.run(routeLines, Math.max(1, Math.min(rounds, 3))), 'route');

await step('SQL Server CDC reader (simulated driver rows, in process)', () => mssql.run(Number(process.env.BENCH_CDC_COMMITS ?? 150_000), rounds), 'mssql');
await step('SQL Server CDC reader through the driver (TDS test server in its own process)', () => mssqlTds.run(Number(process.env.BENCH_TDS_ROWS ?? 200_000), Math.max(1, Math.min(rounds, 3)), Number(process.env.BENCH_TDS_BACKLOG ?? 1_000_000)), 'mssql-tds');

await step('the task runner against the library, and start-up', () => runner.run(Number(process.env.BENCH_RUN_ROWS ?? 500_000), Math.max(1, Math.min(rounds, 3))), 'runner');

await step('delivery to Service Bus (AMQP test broker in its own process)', () => serviceBus.run(Math.max(1, Math.min(rounds, 3))), 'service-bus');

const stateLines = Number(process.env.BENCH_STATE_LINES ?? 1_000_000);
await step(`asb-sink --state-file over ${stateLines.toLocaleString('en-US')} lines`, () => stateFile.run(stateLines, Math.max(1, Math.min(rounds, 2))), 'state-file');

const latencyRates = (process.env.BENCH_LATENCY_RATES ?? '1000,10000').split(',').map(Number);
await step('end-to-end latency: commit in SQL Server to message accepted by Service Bus (TDS test server, dstream run, AMQP test broker: three processes)', () => latency.run(latencyRates, Number(process.env.BENCH_LATENCY_SECONDS ?? 40)), 'latency');

const verdicts = sections.flatMap((s) => evaluate(s.result));
const targetTable = markdown([['target', 'measured', 'met'], ...verdicts.map((v) => [v.target.text, v.value, v.pass ? 'yes' : 'NO'])]);
process.stdout.write(`\n## Targets\n\n${targetTable}\n`);

const machine = `${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node.js ${process.version}, ${process.platform}/${process.arch}`;
const doc = [
  '# dstream benchmark results',
  '',
  `Written by \`npm run bench\` on ${new Date().toISOString().slice(0, 10)}. Machine: ${machine}.`,
  '',
  '## Method',
  '',
  '- Input: synthetic CDC envelopes (`benchmarks/cdc-data.ts`): five tables, 300-450 bytes a line, a checkpoint after each',
  '  transaction of 1-5 rows, seeded so every run reads the same bytes.',
  '- Every contender runs once to warm up, then the timed rounds run interleaved (A B C, A B C, ...). Targets are',
  '  throughput ratios against a baseline of the same run, judged on the best round of each: on a shared virtual',
  '  machine interference only ever adds time, and the spread between rounds was seen to reach 2x. The median of the',
  '  per-round ratios is shown beside it. Absolute numbers are for orientation only.',
  '- In-process runs feed 64 KiB chunks held in memory into a sink that discards; process runs read a file on stdin',
  '  and write to /dev/null. Peak RSS is the VmHWM of the process, polled from /proc every 10 ms.',
  '',
  ...sections.flatMap((s) => [`## ${s.title}`, '', formatTable(s.result), '', ...(s.result.notes ?? []).map((n) => `- ${n}`), '']),
  '## Targets',
  '',
  targetTable,
  '',
  '## Caveats',
  '',
  '- Two cores: a process benchmark competes with the harness that polls it.',
  '- `jq` is a different kind of tool (a general JSON processor); it is shown for scale.',
  '',
].join('\n');
writeFileSync(fileURLToPath(new URL('./RESULTS.md', import.meta.url)), doc);
process.stdout.write('\nwrote benchmarks/RESULTS.md\n');
if (verdicts.some((v) => !v.pass)) process.exitCode = 1;
