/**
 * Benchmark harness: contenders measured in the same run, interleaved round by round, median of
 * the rounds reported. Results are ratios against a baseline from the same run, because absolute
 * times drift on a shared machine.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export interface Measurement {
  group: string;
  name: string;
  /** Median wall time of the timed rounds, ms. */
  ms: number;
  /** Wall time of each timed round, ms, in round order (rounds are interleaved across contenders). */
  rounds: number[];
  lines: number;
  bytes: number;
  /** Peak resident set size, MB (processes only). */
  peakRssMB?: number;
  /** A scalar result (a percentage, a growth in MB) instead of a timing. */
  value?: number;
}

export interface Target {
  group: string;
  subject: string;
  baseline?: string;
  /** Minimum ratio subject/baseline of throughput, or maximum peak RSS in MB when `maxRssMB`. */
  minRatio?: number;
  maxRssMB?: number;
  /** Bounds on the subject's scalar `value`. */
  min?: number;
  max?: number;
  text: string;
}

export interface BenchResult {
  measurements: Measurement[];
  targets: Target[];
  notes?: string[];
}

export interface Contender {
  name: string;
  run: () => Promise<number | void>;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Runs each contender once to warm up, then `rounds` times interleaved; returns median ms per contender. */
export async function race(contenders: Contender[], rounds: number): Promise<Map<string, { ms: number; rounds: number[]; peak?: number }>> {
  const times = new Map<string, number[]>(contenders.map((c) => [c.name, []]));
  const peaks = new Map<string, number>();
  for (const c of contenders) await c.run();
  for (let r = 0; r < rounds; r++) {
    for (const c of contenders) {
      (globalThis as { gc?: () => void }).gc?.();
      const t0 = performance.now();
      const peak = await c.run();
      times.get(c.name)!.push(performance.now() - t0);
      if (typeof peak === 'number') peaks.set(c.name, Math.max(peaks.get(c.name) ?? 0, peak));
    }
  }
  return new Map(contenders.map((c) => [c.name, { ms: median(times.get(c.name)!), rounds: times.get(c.name)!, peak: peaks.get(c.name) }]));
}

/**
 * Spawns a command with stdin from `inputPath` and stdout to /dev/null; resolves with its peak
 * RSS in MB (VmHWM, polled from /proc on Linux; 0 elsewhere). Rejects on a non-zero exit.
 */
export function runProcess(command: string, args: string[], inputPath: string, env?: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const stdin = openSync(inputPath, 'r');
    const stdout = openSync('/dev/null', 'w');
    const child = spawn(command, args, { stdio: [stdin, stdout, 'pipe'], ...(env ? { env: { ...process.env, ...env } } : {}) });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    let peakKB = 0;
    const poll = setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) peakKB = Math.max(peakKB, Number(m[1]));
      } catch {
        // The process has just exited; the last reading stands.
      }
    }, 10);
    child.on('error', reject);
    child.on('close', (code) => {
      clearInterval(poll);
      closeSync(stdin);
      closeSync(stdout);
      if (code !== 0) reject(new Error(`${command} ${args.join(' ')} exited ${code}: ${stderr}`));
      else resolve(peakKB / 1024);
    });
  });
}

export function formatTable(result: BenchResult): string {
  const rows = [['group', 'contender', 'lines/s (best)', 'MB/s (best)', 'best ms', 'median ms', 'peak RSS MB / value']];
  for (const m of result.measurements) {
    if (m.value !== undefined) {
      rows.push([m.group, m.name, '', '', '', '', m.value.toFixed(1)]);
      continue;
    }
    const best = Math.min(...m.rounds);
    rows.push([
      m.group,
      m.name,
      Math.round((m.lines / best) * 1000).toLocaleString('en-US'),
      ((m.bytes / 1e6 / best) * 1000).toFixed(1),
      best.toFixed(0),
      m.ms.toFixed(0),
      m.peakRssMB === undefined ? '' : m.peakRssMB.toFixed(0),
    ]);
  }
  return markdown(rows);
}

export function evaluate(result: BenchResult): Array<{ target: Target; value: string; pass: boolean }> {
  const find = (g: string, n: string) => result.measurements.find((m) => m.group === g && m.name === n);
  return result.targets.map((target) => {
    const subject = find(target.group, target.subject);
    if (subject === undefined) return { target, value: 'not measured', pass: false };
    if (target.min !== undefined || target.max !== undefined) {
      const v = subject.value ?? NaN;
      return { target, value: v.toFixed(1), pass: (target.min === undefined || v >= target.min) && (target.max === undefined || v <= target.max) };
    }
    if (target.maxRssMB !== undefined) {
      const v = subject.peakRssMB ?? NaN;
      return { target, value: `${v.toFixed(0)} MB`, pass: v <= target.maxRssMB };
    }
    const base = find(target.group, target.baseline!);
    if (base === undefined) return { target, value: 'no baseline', pass: false };
    // Throughput ratio, judged on the best round of each (interference on a shared machine only
    // ever adds time); the median of the per-round ratios (contenders of a round ran back to back)
    // is shown beside it. Contenders may process different amounts (a slow baseline gets less).
    const rate = (m: Measurement, ms: number) => m.lines / ms;
    const ratio = rate(subject, Math.min(...subject.rounds)) / rate(base, Math.min(...base.rounds));
    const perRound = median(subject.rounds.map((t, i) => rate(subject, t) / rate(base, base.rounds[i]!)));
    return { target, value: `${ratio.toFixed(2)}x (median round ${perRound.toFixed(2)}x)`, pass: ratio >= target.minRatio! };
  });
}

export function markdown(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(rows[0]!), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...rows.slice(1).map(line)].join('\n');
}

/**
 * Reads an mssqlCdc() stream until `total` rows have come and a checkpoint follows, then aborts it
 * through `ac` (the signal given to mssqlCdc). `onRow` sees every 1000th row.
 */
export async function drainCdc(stream: Readable, ac: AbortController, total: number, onRow?: (n: number) => void): Promise<number> {
  let rows = 0;
  await pipeline(
    stream,
    new Writable({
      objectMode: true,
      highWaterMark: 1024,
      write(e: { type: string }, _enc, cb) {
        if (e.type === 'cdc' && ++rows % 1000 === 0) onRow?.(rows);
        if (rows >= total && e.type === 'checkpoint') ac.abort();
        cb();
      },
    }),
  ).catch((err: Error) => {
    if (err.name !== 'AbortError') throw err;
  });
  return rows;
}

/**
 * Peak RSS of this process in the first and second half of a read of `total` rows (from row 100k,
 * when the heap has sized itself): anything that grows with the rows read shows as growth. Beside
 * it, the heap in use after a full collection before and after the read: what the read left
 * alive, whatever the collector's timing did to the peaks.
 */
export async function rssAcross(total: number, group: string, read: (onRow: (n: number) => void) => Promise<unknown>): Promise<Measurement[]> {
  // run.ts starts only with gc() (node --expose-gc).
  const gc = (globalThis as { gc?: () => void }).gc!;
  const liveHeap = () => {
    gc();
    return process.memoryUsage().heapUsed / 2 ** 20;
  };
  const before = liveHeap();
  let firstHalf = 0;
  let secondHalf = 0;
  await read((n) => {
    const rss = process.memoryUsage().rss / 2 ** 20;
    if (n > 100_000 && n <= total / 2) firstHalf = Math.max(firstHalf, rss);
    if (n > total / 2) secondHalf = Math.max(secondHalf, rss);
  });
  const after = liveHeap();
  const at = (name: string, value: number): Measurement => ({ group, name, ms: 0, rounds: [], lines: 0, bytes: 0, value });
  return [
    at('peak RSS, rows 100k-500k (MB)', firstHalf),
    at('peak RSS, rows 500k-1M (MB)', secondHalf),
    at('RSS growth, second half over first (MB)', secondHalf - firstHalf),
    at('heap used after a full GC, before the read (MB)', before),
    at('heap used after a full GC, after the read (MB)', after),
  ];
}
