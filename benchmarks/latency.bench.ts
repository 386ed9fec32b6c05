/**
 * End-to-end latency of `dstream run` with default settings: from a commit in the CDC model (the
 * TDS test server, its own process, commit times from the machine's clock) to the message accepted
 * by the AMQP test broker (its own process, which stamps the time it accepted each message), at a
 * steady 1,000 and 10,000 rows/s over three tables. The same figures come from dstream's own
 * metric (`dstream_delivery_latency_seconds`, scraped from /metrics of the run) so the metric is
 * checked against an outside measurement. Target: p99 <= poll interval (500 ms) + linger (20 ms)
 * + 250 ms at both rates; RSS of the dstream process flat (second half's peak < first half's + 16 MB).
 * BENCH_PROF=<dir>: the `dstream run` process writes a V8 CPU profile there (--cpu-prof) when it ends.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { BenchResult, Measurement, Target } from './harness.js';

const TSX = fileURLToPath(new URL('./node_modules/tsx/dist/cli.mjs', import.meta.url));
const DSTREAM = fileURLToPath(new URL('../dist/bin/dstream.js', import.meta.url));
const SINK_BIN = fileURLToPath(new URL('../dist/bin/asb-sink.js', import.meta.url));
const POLL_MS = 500;
const LINGER_MS = 20;
const TARGET_MS = POLL_MS + LINGER_MS + 250;
// A cold run's first windows take up to ~1 s each (JIT, links attaching, pools filling), and at
// 10,000 rows/s the heap takes some 10 s to grow to its working size: 10 s keeps both out of the
// measured rows and out of the RSS comparison.
const WARMUP_S = 10;
const PROF = process.env.BENCH_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROF}`] : [];

/** A child that answers one JSON line per line it is sent. */
interface Talker {
  child: ChildProcess;
  first: Record<string, unknown>;
  ask(v: unknown): Promise<Record<string, unknown>>;
}

async function talker(script: string): Promise<Talker> {
  const child = spawn(process.execPath, [TSX, fileURLToPath(new URL(script, import.meta.url))], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: Interface = createInterface({ input: child.stdout! });
  const queue: Array<{ resolve: (v: Record<string, unknown>) => void; reject: (err: Error) => void }> = [];
  lines.on('line', (l) => queue.shift()?.resolve(JSON.parse(l) as Record<string, unknown>));
  child.once('exit', (code) => {
    for (const w of queue.splice(0)) w.reject(new Error(`${script} exited with ${code}`));
  });
  const next = () => new Promise<Record<string, unknown>>((resolve, reject) => queue.push({ resolve, reject }));
  const first = await next();
  return {
    child,
    first,
    ask: (v) => {
      const answer = next();
      child.stdin!.write(`${JSON.stringify(v)}\n`);
      return answer;
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  if (process.env.BENCH_DEBUG) process.stderr.write(`latency: waiting for ${what}\n`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`latency bench: timed out waiting for ${what}`);
    await sleep(100);
  }
}

interface Scrape {
  buckets: Array<{ le: number; count: number }>;
  behind: number;
}

/** The delivery latency histogram (summed over destinations) and the largest seconds-behind. */
async function scrape(base: string): Promise<Scrape> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const byLe = new Map<number, number>();
  let behind = 0;
  for (const line of text.split('\n')) {
    const b = /^dstream_delivery_latency_seconds_bucket\{.*le="([^"]+)".*\} (\S+)$/.exec(line);
    if (b) byLe.set(b[1] === '+Inf' ? Infinity : Number(b[1]), (byLe.get(b[1] === '+Inf' ? Infinity : Number(b[1])) ?? 0) + Number(b[2]));
    const g = /^dstream_seconds_behind_source\{.*\} (\S+)$/.exec(line);
    if (g) behind = Math.max(behind, Number(g[1]));
  }
  return { buckets: [...byLe].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le), behind };
}

/** Rows in the delivery latency histogram (its +Inf bucket). */
function observed(s: Scrape): number {
  return s.buckets.at(-1)?.le === Infinity ? s.buckets.at(-1)!.count : 0;
}

/** Prometheus' histogram_quantile over the bucket counts of (to - from), in ms. */
function quantileMs(from: Scrape, to: Scrape, q: number): number {
  const before = new Map(from.buckets.map((b) => [b.le, b.count]));
  const buckets = to.buckets.map((b) => ({ le: b.le, count: b.count - (before.get(b.le) ?? 0) }));
  const total = buckets.at(-1)?.count ?? 0;
  if (total === 0) return NaN;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const b of buckets) {
    if (b.count >= rank) {
      if (b.le === Infinity) return prevLe * 1000;
      return (prevLe + ((b.le - prevLe) * (rank - prevCount)) / Math.max(1, b.count - prevCount)) * 1000;
    }
    prevLe = b.le;
    prevCount = b.count;
  }
  return NaN;
}

function rssMB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** CPU seconds (user + system, /proc/<pid>/stat) a process has used so far. */
function ownCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** The same, with every process under it (tsx's child; a provider run as its own executable). */
function cpuSeconds(pid: number): number {
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
  return ownCpuSeconds(pid) + (children === '' ? 0 : children.split(' ').reduce((sum, c) => sum + cpuSeconds(Number(c)), 0));
}

async function oneRate(rate: number, seconds: number): Promise<{ measurements: Measurement[]; group: string; notes: string[] }> {
  const group = `steady ${rate.toLocaleString('en-US')} rows/s over 3 tables for ${seconds} s (after ${WARMUP_S} s warm-up), defaults (poll 500 ms, linger 20 ms)`;
  const source = await talker('./latency-source.ts');
  const broker = await talker('./latency-broker.ts');
  const dir = mkdtempSync(join(tmpdir(), 'dstream-latency-'));
  let run: ChildProcess | undefined;
  try {
    writeFileSync(
      join(dir, 'dstream.hcl'),
      `task "latency" {
  input {
    provider = "mssql-cdc"
    config {
      connection_string = "{{ env "MSSQL_CONNECTION_STRING" }}"
      tables = ["Persons", "sales.Orders", "Customers"]
      start = "earliest"
      progress_ms = 0
    }
  }
  output {
    ${process.env.BENCH_LATENCY_SINK === 'process' ? `provider_path = "${SINK_BIN}"` : 'provider = "asb-sink"'}
    config {
      connection_string = "{{ env "ASB_CONNECTION_STRING" }}"
      progress_ms = 0
      quiet = true
    }
  }
}
`,
    );
    const asb = `Endpoint=sb://127.0.0.1:${broker.first.port as number};SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true`;
    run = spawn(process.execPath, [...PROF, DSTREAM, 'run', 'latency', '--metrics-port', '0', '--metrics-host', '127.0.0.1', ...(process.env.BENCH_DEBUG ? [] : ['--quiet'])], {
      cwd: dir,
      env: { ...process.env, MSSQL_CONNECTION_STRING: source.first.connectionString as string, ASB_CONNECTION_STRING: asb },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    run.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const base = await until('the metrics address', async () => /metrics at (http:\/\/\S+)\/metrics/.exec(stderr)?.[1], 30_000);
    await until('the run to be ready', async () => ((await fetch(`${base}/readyz`)).status === 200 ? true : undefined), 30_000);
    // One steady stream: a warm-up (links attach, the JIT settles; not measured) that runs on into
    // the measured rows without a pause. A pause between them would be idle polls, and the reader
    // waits longer after each (its idle backoff): the first rows after it would measure that, not a
    // steady rate.
    const asked = Date.now();
    const committing = source.ask({ rate, seconds: WARMUP_S + seconds });
    const from = asked + WARMUP_S * 1000;
    await sleep(from - Date.now());
    // The metric's window starts here: what /metrics says now (the providers' last lines, up to
    // its interval old) is taken off what it says once every row is in it.
    const before = await scrape(base);
    // CPU of each process over the measured rows: which one limits the rate.
    const cpuNow = () => ({ source: cpuSeconds(source.child.pid!), dstream: ownCpuSeconds(run!.pid!), providers: cpuSeconds(run!.pid!) - ownCpuSeconds(run!.pid!), broker: cpuSeconds(broker.child.pid!) });
    const cpuFrom = cpuNow();
    const rss: Array<{ at: number; mb: number }> = [];
    let behindMax = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        rss.push({ at: Date.now(), mb: rssMB(run!.pid!) });
        behindMax = Math.max(behindMax, (await scrape(base).catch(() => ({ behind: 0 }))).behind);
        await sleep(500);
      }
    })();
    const load = loadavg()[0]!;
    const committed = await committing;
    const total = committed.rows as number;
    const drainedAt = await until('every row at the broker', async () => {
      const got = (await broker.ask({})).received as number;
      if (process.env.BENCH_DEBUG) process.stderr.write(`latency: ${got} of ${total} rows at the broker\n`);
      return got >= total ? Date.now() : undefined;
    }, 300_000);
    // ... and ends when the last of them is in the histogram (its line reaches the executor within its interval, 1 s).
    const after = await until('every row in the metric', async () => {
      const s = await scrape(base);
      return observed(s) >= total ? s : undefined;
    }, 30_000);
    const cpuTo = cpuNow();
    sampling = false;
    await sampler;
    // The measured rows: those due at or after the warm-up's end on the committer's own schedule.
    const measuredFrom = (committed.startedAt as number) + WARMUP_S * 1000;
    const outside = await broker.ask({ from: measuredFrom });
    // The rows in the metric's difference are the last ones the broker took in (order per queue is
    // kept; across queues it is the broker's, to within one of its 20 ms collections).
    const inMetric = observed(after) - observed(before);
    const same = await broker.ask({ last: inMetric });
    const half = measuredFrom + (seconds * 1000) / 2;
    const firstHalf = Math.max(...rss.filter((r) => r.at < half).map((r) => r.mb));
    const secondHalf = Math.max(...rss.filter((r) => r.at >= half).map((r) => r.mb));
    const at = (name: string, value: number): Measurement => ({ group, name, ms: 0, rounds: [], lines: 0, bytes: 0, value });
    const measurements = [
      at('broker: rows measured', outside.count as number),
      at('broker: p50 latency (ms)', outside.p50 as number),
      at('broker: p99 latency (ms)', outside.p99 as number),
      at('broker: max latency (ms)', outside.max as number),
      at('metric: rows in the histogram between the scrapes', inMetric),
      at('metric: p50 latency (ms, histogram_quantile)', quantileMs(before, after, 0.5)),
      at('metric: p99 latency (ms, histogram_quantile)', quantileMs(before, after, 0.99)),
      at("broker: p50 latency of the metric's rows (ms)", same.p50 as number),
      at("broker: p99 latency of the metric's rows (ms)", same.p99 as number),
      at('metric: max seconds behind, sampled every 0.5 s (ms)', behindMax * 1000),
      at('drained after the last commit (ms)', drainedAt - (measuredFrom + seconds * 1000)),
      at('committer fell behind its schedule by at most (ms, warm-up included)', committed.lagMs as number),
      at('dstream peak RSS, first half (MB)', firstHalf),
      at('dstream peak RSS, second half (MB)', secondHalf),
      at('RSS growth, second half over first (MB)', secondHalf - firstHalf),
      at('CPU s, warm-up end to the last row in the metric: source process (CDC model, TDS server, committer)', cpuTo.source - cpuFrom.source),
      at('CPU s, same span: dstream run', cpuTo.dstream - cpuFrom.dstream),
      at('CPU s, same span: provider processes under dstream run (asb-sink with BENCH_LATENCY_SINK=process)', cpuTo.providers - cpuFrom.providers),
      at('CPU s, same span: AMQP test broker process', cpuTo.broker - cpuFrom.broker),
      at('load average (1 min) at the start', load),
    ];
    return { measurements, group, notes: [] };
  } finally {
    run?.kill('SIGTERM');
    await new Promise((r) => (run && run.exitCode === null ? run.once('exit', r) : r(undefined)));
    for (const t of [source, broker]) {
      t.child.stdin!.end();
      t.child.kill('SIGTERM');
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * 40 s per rate: at 10,000 rows/s the old space swings between ~80 and ~106 MB from one major GC to
 * the next (about every 5 s, the Service Bus SDK's send buffers dying there), and RSS with it. A
 * 10 s half saw two such swings, so its peak differed from the other half's by up to ~25 MB with
 * no growth (heap and external memory sampled from /metrics); a 20 s half sees four.
 */
export async function run(rates: number[] = [1000, 10_000], seconds = 40): Promise<BenchResult> {
  const measurements: Measurement[] = [];
  const targets: Target[] = [];
  const notes: string[] = [];
  for (const rate of rates) {
    const r = await oneRate(rate, seconds);
    measurements.push(...r.measurements);
    targets.push(
      { group: r.group, subject: 'broker: p99 latency (ms)', max: TARGET_MS, text: `${rate.toLocaleString('en-US')} rows/s: p99 commit-to-accepted <= poll + linger + 250 ms (${TARGET_MS} ms)` },
      { group: r.group, subject: 'RSS growth, second half over first (MB)', max: 16, text: `${rate.toLocaleString('en-US')} rows/s: dstream's RSS flat (second-half peak < first-half peak + 16 MB)` },
    );
  }
  notes.push(
    'Three processes besides the harness: the TDS test server with the CDC model and its committer, `dstream run` (mssql-cdc -> asb-sink, both built in, all defaults), the AMQP test broker. Latency per row: the time the broker accepted the message minus the CommitTime in its body (cdc.lsn_time_mapping, from the machine clock; SQL Server datetime, so +-3 ms).',
    "The committer runs without a pause from the warm-up into the measured rows (a pause would mean idle polls, after which the reader polls less often, and the first rows after it would measure that backoff rather than a steady rate). The broker's figures cover the rows due at or after the warm-up's end. The metric's p50/p99 come from the difference of two scrapes, one at the warm-up's end (the providers' metrics lines are up to 1 s old then), one when every row is in the histogram; the broker's figures over those same rows (the last ones it took in, as many as the difference counts) stand beside them. The metric's are interpolated within histogram buckets (as Prometheus' histogram_quantile does), so they are as coarse as the buckets around them (50 ms apart from 0.25 to 1 s, at most about 12 % apart up to 5 s).",
  );
  return { measurements, targets, notes };
}
