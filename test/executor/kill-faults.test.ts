/**
 * Fault suite, bounded for CI: `dstream run` killed with SIGKILL at several random points (seeded,
 * printed) while it writes into files and into the AMQP test broker, then run to the end. Counting
 * rows end to end: none lost, a row delivered again only if it comes after the position stored
 * when the run was killed, and order kept per table within every run.
 */
import { type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Envelope } from '../../lib/index.js';
import { generateChanges } from '../../lib/sources/generator/generator.js';
import { TestBroker } from '../support/asb-broker.js';
import { DSTREAM_BIN, spawnNode } from '../support/process.js';

const COUNT = 6000;
const KILLS = 3;
const TABLES = ['Persons', 'Orders', 'Customers'];

/** A small seeded generator (mulberry32): random kill points that a failure report can replay. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const keyOf = (e: Envelope) => `${e.metadata?.TableName}|${e.metadata?.LSN}|${e.metadata?.Seq}|${e.metadata?.OperationType}`;
/** Row key -> its index in the generated stream (the generator's position counts rows). */
const INDEX = new Map([...generateChanges({ seed: 1, count: COUNT })].filter((e) => e.type !== 'checkpoint').map((e, i) => [keyOf(e), i] as const));

function taskFile(dir: string, output: string, rate = 0): string {
  const config = join(dir, 'dstream.hcl');
  writeFileSync(config, `task "demo" {\n  input {\n    provider = "generator"\n    config {\n      count = ${COUNT}\n      rate = ${rate}\n    }\n  }\n  output {\n${output}\n  }\n}\n`);
  return config;
}

function storedRows(stateDir: string): number {
  const path = join(stateDir, 'tasks', 'demo.json');
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as { position: { rows: number } }).position.rows : 0;
}

/**
 * Per destination, the row indexes delivered, in delivery order, cut into runs: `runs[k]` holds
 * what run k added. Checks, for every run after a kill: each row it added comes at or after the
 * position stored when the previous run died (no duplicate before it), and each table's rows are
 * in increasing order within the run.
 */
function check(segments: Map<string, number[][]>, storedAtKill: number[]): void {
  const seen = new Set<number>();
  for (const [dest, runs] of segments) {
    runs.forEach((rows, k) => {
      if (k > 0) {
        const before = rows.find((r) => r < storedAtKill[k - 1]!);
        expect(before, `${dest}: run ${k} delivered row ${before} again, before the stored position ${storedAtKill[k - 1]}`).toBeUndefined();
      }
      // A send retried after its answer was lost arrives twice (duplicate detection drops the copy
      // on Service Bus); order is about first arrivals.
      const first = rows.filter((r, i) => rows.indexOf(r) === i);
      for (let i = 1; i < first.length; i++) expect(first[i]!, `${dest}: run ${k} out of order at ${i}`).toBeGreaterThan(first[i - 1]!);
      for (const r of rows) seen.add(r);
    });
  }
  const lost = [...INDEX.values()].filter((i) => !seen.has(i));
  expect(lost.length, `lost rows: ${lost.slice(0, 10).join(', ')}`).toBe(0);
}

/**
 * Runs `dstream run` KILLS times, each killed with SIGKILL once `progress()` passes a random point
 * beyond where it started, then once to the end. `snapshot()` gives, per destination, the row
 * indexes delivered so far (after the killed process's connections are gone).
 */
async function killLoop(options: {
  seed: number;
  config: string;
  stateDir: string;
  progress: () => number;
  snapshot: () => Promise<Map<string, number[]>>;
}): Promise<{ segments: Map<string, number[][]>; storedAtKill: number[] }> {
  const random = seeded(options.seed);
  const segments = new Map<string, number[][]>();
  const storedAtKill: number[] = [];
  let previous = new Map<string, number>();
  const cut = async () => {
    const now = await options.snapshot();
    for (const [dest, rows] of now) {
      if (!segments.has(dest)) segments.set(dest, []);
      const runs = segments.get(dest)!;
      runs.push(rows.slice(previous.get(dest) ?? 0));
    }
    previous = new Map([...now].map(([d, rows]) => [d, rows.length]));
  };
  const env = { DSTREAM_STATE_DIR: options.stateDir };
  for (let k = 0; k < KILLS; k++) {
    // The point: the stored position has moved a random 5-20% of the stream past where this run
    // started, then a random 0-300 rows more were delivered (so a kill falls between saves).
    const storedTarget = storedRows(options.stateDir) + Math.round((0.05 + random() * 0.15) * COUNT);
    const extra = Math.round(random() * 300);
    let deliveredTarget: number | undefined;
    let killed = false;
    const run = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', options.config, '--quiet'], {
      env,
      timeoutMs: 30_000,
      onSpawn: (child: ChildProcess) => {
        // Waits for the point, by polling what the run has delivered (the event is "data written").
        const poll = setInterval(() => {
          if (deliveredTarget === undefined) {
            if (storedRows(options.stateDir) < storedTarget) return;
            deliveredTarget = options.progress() + extra;
          }
          if (options.progress() < deliveredTarget) return;
          clearInterval(poll);
          killed = true;
          child.kill('SIGKILL');
        }, 5);
        child.once('exit', () => clearInterval(poll));
      },
    });
    expect(killed, `run ${k} ended before its kill point (stored ${storedTarget} rows); stderr: ${run.stderr}`).toBe(true);
    expect(run.signal).toBe('SIGKILL');
    storedAtKill.push(storedRows(options.stateDir));
    await cut();
  }
  const last = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', options.config, '--quiet'], { env, timeoutMs: 30_000 });
  expect(last.code, last.stderr).toBe(0);
  await cut();
  return { segments, storedAtKill };
}

describe('kill -9 of `dstream run` at random points (bounded fault suite)', () => {
  it('into files: 0 lost, duplicates only after the stored position, order per table kept', async () => {
    const seed = Number(process.env.DSTREAM_FAULT_SEED ?? 16);
    const dir = mkdtempSync(join(tmpdir(), 'dstream-kill-files-'));
    const out = join(dir, 'out');
    const config = taskFile(dir, `    provider = "files"\n    config {\n      dir = "${out}"\n    }`);
    const files = () => (existsSync(out) ? readdirSync(out).filter((f) => f.endsWith('.ndjson')) : []);
    const bytes = () => files().reduce((n, f) => n + statSync(join(out, f)).size, 0);
    // Progress in rows, estimated from bytes (a row is about 300 bytes): only to pick kill points.
    const progress = () => Math.floor(bytes() / 300);
    const snapshot = async () =>
      new Map(
        files().map((f) => {
          // Whole lines only: a torn tail left by the kill is cut by the next run before it appends.
          const text = readFileSync(join(out, f), 'utf8');
          const whole = text.slice(0, text.lastIndexOf('\n') + 1);
          const rows = whole
            .split('\n')
            .filter(Boolean)
            .map((l) => INDEX.get(keyOf(JSON.parse(l) as Envelope))!);
          return [f, rows] as const;
        }),
      );
    const { segments, storedAtKill } = await killLoop({ seed, config, stateDir: join(dir, 'state'), progress, snapshot });
    console.log(`files fault loop (seed ${seed}): stored positions at the kills ${storedAtKill.join(', ')}`);
    check(segments, storedAtKill);
  }, 150_000);

  describe('into the AMQP test broker', () => {
    let broker: TestBroker;
    beforeEach(async () => {
      broker = await TestBroker.start();
      // Duplicate detection off: every copy that arrives is kept, so duplicates can be counted.
      for (const t of TABLES) broker.createQueue(`${t}_cdc_events`);
    });
    afterEach(async () => {
      await broker.close();
      expect(broker.errors).toEqual([]);
    });

    it('0 lost, duplicates only after the stored position, order per table kept', async () => {
      const seed = Number(process.env.DSTREAM_FAULT_SEED ?? 16);
      const dir = mkdtempSync(join(tmpdir(), 'dstream-kill-asb-'));
      // Paced, with small batches: the test broker takes a whole batch at once, so an unpaced run
      // would be over in a few transfers with nothing between them to kill.
      const config = taskFile(dir, `    provider = "asb-sink"\n    config {\n      connection_string = "${broker.connectionString}"\n      max_batch_messages = 100\n      progress_ms = 0\n    }`, 3000);
      const received = () => TABLES.reduce((n, t) => n + (broker.queue(`${t}_cdc_events`)?.messages.length ?? 0), 0);
      const snapshot = async () => {
        // The killed process's frames still in the socket are taken before counting.
        while (broker.sockets.size > 0) await new Promise((r) => setTimeout(r, 10));
        return new Map(TABLES.map((t) => [t, broker.bodies(`${t}_cdc_events`).map((b) => INDEX.get(keyOf(b as Envelope))!)] as const));
      };
      const { segments, storedAtKill } = await killLoop({ seed, config, stateDir: join(dir, 'state'), progress: received, snapshot });
      console.log(`broker fault loop (seed ${seed}): stored positions at the kills ${storedAtKill.join(', ')}`);
      check(segments, storedAtKill);
    }, 150_000);

    it('an output that fails stops the input with one SIGTERM (not "SIGTERM again")', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'dstream-fail-asb-'));
      const config = join(dir, 'dstream.hcl');
      writeFileSync(
        config,
        `task "demo" {\n  input {\n    provider = "generator"\n    config {\n      tables = ["Ghosts"]\n      rate = 500\n    }\n  }\n  output {\n    provider = "asb-sink"\n    config {\n      connection_string = "${broker.connectionString}"\n      max_retries = 0\n      progress_ms = 0\n    }\n  }\n}\n`,
      );
      const run = await spawnNode(DSTREAM_BIN, ['run', 'demo', '--config', config, '--quiet'], { env: { DSTREAM_STATE_DIR: join(dir, 'state') }, timeoutMs: 25_000 });
      expect(run.code).toBe(1);
      expect(run.stderr).toContain('Ghosts_cdc_events');
      expect(run.stderr).not.toContain('SIGTERM again');
    }, 30_000);
  });
});

