import { mkdtempSync, readFileSync, readdirSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { once } from 'node:events';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, type Envelope } from '../../lib/index.js';
import { BUILTINS } from '../../lib/providers/builtins.js';
import { runTask, taskVerb } from '../../lib/executor/executor.js';
import { startProvider } from '../../lib/executor/provider-handle.js';
import { openSession } from '../../lib/executor/session.js';
import { header } from '../../lib/protocol/messages.js';
import type { ProviderDefinition } from '../../lib/provider/run-provider.js';
import { FileStateStore } from '../../lib/state/state-store.js';
import { generateChanges } from '../../lib/sources/generator/generator.js';
import type { TaskConfig } from '../../lib/config/tasks.js';

const tmp = (p: string) => mkdtempSync(join(tmpdir(), p));
const demo = (dir: string, count: number): TaskConfig => ({
  name: 'demo',
  type: 'providers',
  input: { provider: 'generator', config: { count, seed: 5 } },
  output: { provider: 'files', config: { dir } },
  file: 'dstream.hcl',
  line: 1,
});
const readAll = (dir: string) =>
  readdirSync(dir)
    .sort()
    .flatMap((f) => readFileSync(join(dir, f), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Envelope));

describe('runTask with built-in providers', () => {
  it('delivers every row, stores the last acknowledged checkpoint, and resumes without loss or repetition', async () => {
    const out = tmp('dstream-out-');
    const store = new FileStateStore(tmp('dstream-state-'));
    const first = await runTask(demo(out, 200), { builtins: BUILTINS, store });
    expect(first.rows).toBe(200);
    expect(first.checkpointsAcked).toBeGreaterThan(60);
    const stored = await store.load('demo');
    expect(stored?.position).toEqual(first.lastPosition);
    expect(readAll(out)).toHaveLength(200);
    // A later run with a higher count picks up after the stored position.
    const second = await runTask(demo(out, 500), { builtins: BUILTINS, store });
    expect(second.rows).toBe(300);
    const expected = [...generateChanges({ count: 500, seed: 5 })].filter((e) => e.type !== 'checkpoint');
    const byTable = (xs: Envelope[]) => Object.fromEntries(['Customers', 'Orders', 'Persons'].map((t) => [t, xs.filter((e) => e.metadata?.TableName === t).map((e) => e.data)]));
    expect(byTable(readAll(out))).toEqual(byTable(expected));
  });

  it('answers lifecycle verbs: discover from the input feeds the output', async () => {
    const out = tmp('dstream-out-');
    const plan = await taskVerb(demo(out, 10), 'plan', { builtins: BUILTINS });
    expect(plan.streams.map((s) => s.name)).toEqual(['Persons', 'Orders', 'Customers']);
    expect(plan.output.resources).toEqual([
      { kind: 'file', name: join(out, 'Persons_cdc_events.ndjson'), action: 'create' },
      { kind: 'file', name: join(out, 'Orders_cdc_events.ndjson'), action: 'create' },
      { kind: 'file', name: join(out, 'Customers_cdc_events.ndjson'), action: 'create' },
    ]);
    expect(plan.output.summary).toBe('Plan: 3 to create, 0 to change, 0 to destroy.');
    // init creates what it says it created; a second init finds them.
    expect((await taskVerb(demo(out, 10), 'init', { builtins: BUILTINS })).output.summary).toBe('Applied: 3 created, 0 changed, 0 destroyed.');
    expect(readdirSync(out).sort()).toEqual(['Customers_cdc_events.ndjson', 'Orders_cdc_events.ndjson', 'Persons_cdc_events.ndjson']);
    expect((await taskVerb(demo(out, 10), 'status', { builtins: BUILTINS })).output.summary).toBe('3 of 3 files written');
    expect((await taskVerb(demo(out, 10), 'init', { builtins: BUILTINS })).output.summary).toBe('Applied: 0 created, 0 changed, 0 destroyed.');
  });

  it('a built-in provider that never stops can be killed (SIGKILL), as a process can', async () => {
    const stubborn = { name: 'stubborn', run: () => new Promise<void>(() => undefined) } as ProviderDefinition<never>;
    for (const objectMode of [false, true]) {
      const handle = startProvider({ label: 'input stubborn', builtin: stubborn }, { objectMode });
      const session = await openSession(handle, header('run', {}), { endInput: true });
      expect(session.legacy).toBe(false);
      handle.kill('SIGKILL');
      expect(await handle.exited).toEqual({ code: null, signal: 'SIGKILL' });
    }
  });

  it("an input's failure is not mistaken for a verb it does not support because of its wording", async () => {
    const picky = {
      name: 'picky',
      discover: () => ({ streams: [{ name: 'Persons' }] }),
      plan: () => {
        throw new Error('this server does not support CDC: enable it first');
      },
    } as unknown as ProviderDefinition<never>;
    const task = { ...demo(tmp('o-'), 1), input: { provider: 'picky', config: {} } };
    const err = await taskVerb(task, 'plan', { builtins: { ...BUILTINS, picky } }).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.PROVIDER);
    expect(err.message).toMatch(/^input picky: plan failed: this server does not support CDC: enable it first/);
    // One that truly has no plan is skipped: the output's plan stands alone.
    const quiet = { name: 'quiet', discover: () => ({ streams: [{ name: 'Persons' }] }) } as unknown as ProviderDefinition<never>;
    const report = await taskVerb({ ...task, input: { provider: 'quiet', config: {} } }, 'plan', { builtins: { ...BUILTINS, quiet } });
    expect(report.input).toBeUndefined();
    expect(report.output.summary).toBe('Plan: 1 to create, 0 to change, 0 to destroy.');
  });

  it("lets timers fire while it forwards a long burst of rows (the sink's linger sends during a window)", async () => {
    // An input whose rows are all at hand (a driver with a window buffered): it writes them
    // without ever waiting for I/O, so only the run's pipe can let the event loop turn.
    const rows = 50_000;
    const burst = {
      name: 'burst',
      run: async (ctx) => {
        for (let i = 0; i < rows; i++) {
          if (!ctx.output.write({ source: 'burst', type: 'cdc', data: { Id: i }, metadata: { TableName: 'Persons', OperationType: 'Insert' } })) await once(ctx.output, 'drain');
        }
      },
    } as ProviderDefinition<never>;
    // An output that arms a timer at its first row, as the Service Bus sink arms its linger, and
    // notes how many rows it had taken when the timer fired.
    let seen = 0;
    let firedAt: number | undefined;
    const watch = {
      name: 'watch',
      run: async (ctx) => {
        for await (const _env of ctx.input) {
          if (seen++ === 0) setTimeout(() => (firedAt = seen), 1);
        }
      },
    } as ProviderDefinition<never>;
    const task: TaskConfig = { name: 'burst', type: 'providers', input: { provider: 'burst', config: {} }, output: { provider: 'watch', config: {} }, file: 'dstream.hcl', line: 1 };
    const summary = await runTask(task, { builtins: { ...BUILTINS, burst, watch }, store: new FileStateStore(tmp('dstream-state-')) });
    expect(summary.rows).toBe(rows);
    expect(seen).toBe(rows);
    expect(firedAt).toBeDefined();
    expect(firedAt!).toBeLessThan(rows);
  });

  it('names an unknown built-in and lists the ones there are', async () => {
    const task = { ...demo(tmp('o-'), 1), input: { provider: 'sqlserver', config: {} } };
    const err = await taskVerb(task, 'plan', { builtins: BUILTINS }).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.CONFIG);
    expect(err.message).toBe('input provider "sqlserver" is not built in; built-in providers: generator, mssql-cdc, files, asb-sink (or use provider_path)');
  });
});

describe('runTask and lifecycle verbs with provider processes that misbehave', () => {
  const fake = join(process.cwd(), 'test/fixtures/fake-provider.mjs');
  const task = (out: string): TaskConfig => ({ ...demo(out, 0), input: { providerPath: fake, config: { count: 7 } } });
  const env = (mode: string) => ({ ...process.env, FAKE_MODE: mode });

  it('a crash before the handshake: the error says so and shows its stderr', async () => {
    const err = await taskVerb(task(tmp('o-')), 'plan', { builtins: BUILTINS, env: env('crash-before-ready') }).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.PROVIDER);
    expect(err.message).toBe(`input ${fake}: exited before its handshake (exit code 3)\n--- last lines of its stderr ---\nboom: cannot reach the database at db.example:1433`);
  });

  it('an error handshake: its message, not a green check', async () => {
    const err = await taskVerb(task(tmp('o-')), 'plan', { builtins: BUILTINS, env: env('error') }).catch((e) => e);
    expect(err.message).toBe(`input ${fake}: config.port: expected an integer, got string "x"`);
    // status still reports the output, with the input's failure as its result.
    const report = await taskVerb(task(tmp('o-')), 'status', { builtins: BUILTINS, env: env('error') });
    expect(report.warnings).toEqual([`input ${fake}: config.port: expected an integer, got string "x"; status goes on with the tables the task file names`]);
    expect(report.input).toMatchObject({ status: 'error', command: 'status', message: `input ${fake}: config.port: expected an integer, got string "x"` });
  });

  it('a hang: stopped after the handshake timeout (run); under a lifecycle verb, taken for an original input and asked nothing', async () => {
    const err = await runTask(task(tmp('o-')), { builtins: BUILTINS, store: new FileStateStore(tmp('s-')), env: env('hang'), handshakeTimeoutMs: 300 }).catch((e) => e);
    expect(err.message).toBe(`input ${fake}: no handshake within 300 ms (stopped; handshake_timeout in its block allows it longer)`);
    const notes: string[] = [];
    const report = await taskVerb(task(tmp('o-')), 'plan', { builtins: BUILTINS, env: env('hang'), probeTimeoutMs: 300, onNote: (n) => notes.push(n) });
    expect(report.streams).toEqual([]);
    expect(notes).toEqual([expect.stringMatching(new RegExp(`^input ${fake} sent no handshake within 300 ms`))]);
  });

  it('a dstream input slower to its handshake than the 5 s probe: the note says it was taken for an original and how to give it longer, and handshake_timeout does', async () => {
    const notes: string[] = [];
    const slow = await taskVerb(task(tmp('o-')), 'plan', { builtins: BUILTINS, env: env('slow-start'), onNote: (n) => notes.push(n) });
    expect(slow.streams).toEqual([]);
    expect(slow.input).toBeUndefined();
    expect(notes).toEqual([
      `input ${fake} sent no handshake within 5000 ms (the original MSSQL ingester reads its config to the end of its input first): taken for a provider of the original dstream and stopped; it is not asked to discover or plan, as the original CLI never asked inputs; if it is a dstream provider that is slow to start, give it longer with handshake_timeout = "30s" in its input block`,
    ]);
    const patient = { ...task(tmp('o-')), input: { providerPath: fake, config: { count: 7 }, handshakeTimeoutMs: 30_000 } };
    const report = await taskVerb(patient, 'plan', { builtins: BUILTINS, env: env('slow-start'), onNote: (n) => notes.push(n) });
    expect(report.streams).toEqual([{ name: 'Persons' }]);
    expect(report.input).toMatchObject({ status: 'ok', command: 'plan' });
    expect(notes).toHaveLength(1);
  }, 60_000);

  it('a provider that declares the protocol but streams instead of answering a lifecycle verb is stopped, not waited for', async () => {
    const err = await taskVerb(task(tmp('o-')), 'plan', { builtins: BUILTINS, env: env('stream-on-every-verb') }).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.PROVIDER);
    expect(err.message).toMatch(new RegExp(`^input ${fake}: answered "discover" with something that is not a result line \\(killed by SIGKILL\\)`));
  });

  it('an older provider without handshake: its config arrives at the top level, its first line is data', async () => {
    const out = tmp('o-');
    const summary = await runTask(task(out), { builtins: BUILTINS, store: new FileStateStore(tmp('s-')), env: env('legacy-input') });
    expect(summary.rows).toBe(7);
    expect(readAll(out).map((e) => (e.data as { Id: number }).Id)).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });

  it('a huge record passes from input to output intact; one over the 4 MiB line limit fails clearly', async () => {
    const out = tmp('o-');
    const summary = await runTask(task(out), { builtins: BUILTINS, store: new FileStateStore(tmp('s-')), env: env('huge-input') });
    expect(summary.rows).toBe(1);
    const [e] = readAll(out);
    expect((e!.data as { Blob: string }).Blob).toHaveLength(3.5 * 1024 * 1024);
    // The executor's pipe imposes no limit below the decoder's: the output's own limit speaks.
    const err = await runTask(task(tmp('o-')), { builtins: BUILTINS, store: new FileStateStore(tmp('s-')), env: { ...env('huge-input'), FAKE_BYTES: String(5 * 1024 * 1024) } }).catch((x) => x);
    expect(err.message).toMatch(/^output files: line 2 is longer than maxLineBytes \(4194304 bytes\) and was not read; .* \(exit code 4\)\n--- last lines of its stderr ---\n/);
  });

  it('a slow output: every row and every acknowledgement arrives, paced by the output', async () => {
    const t: TaskConfig = { ...demo(tmp('o-'), 1000), output: { providerPath: fake, config: {} } };
    const lines: string[] = [];
    const store = new FileStateStore(tmp('s-'));
    const summary = await runTask(t, { builtins: BUILTINS, store, env: env('slow-output'), onStderr: (l) => lines.push(l) });
    expect(summary.rows).toBe(1000);
    const checkpoints = [...generateChanges({ count: 1000, seed: 5 })].filter((e) => e.type === 'checkpoint');
    expect(summary.checkpointsAcked).toBe(checkpoints.length);
    expect((await store.load('demo'))?.position).toEqual((checkpoints.at(-1) as { data: { position: unknown } }).data.position);
    expect(lines).toContain('slow output wrote 1000 rows');
  }, 20_000);

  it('a crash mid-stream: the run fails naming the provider, and keeps what was acknowledged', async () => {
    const store = new FileStateStore(tmp('s-'));
    const err = await runTask(task(tmp('o-')), { builtins: BUILTINS, store, env: env('crash-mid') }).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.PROVIDER);
    expect(err.message).toBe(`input ${fake}: failed (exit code 1)\n--- last lines of its stderr ---\nlost connection to the database`);
    expect((await store.load('demo'))?.position).toBe(5);
  });
});
