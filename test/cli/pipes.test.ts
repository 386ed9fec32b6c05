/**
 * Every pipe printed in the README and in the bins' --help runs, as printed, through bash with the
 * real bins on PATH: the asb-sink end against the AMQP test broker. `mssql-cdc` on PATH replays
 * what the real mssql-cdc provider emitted for the same options, over the TDS test server, just
 * before (the pipe itself would stream forever).
 */
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runProvider } from '../../lib/provider/run-provider.js';
import { mssqlCdcProvider } from '../../lib/providers/mssql-cdc.js';
import { TestBroker } from '../support/asb-broker.js';
import { CdcModel } from '../support/cdc-model.js';
import { sqlServerForTest } from '../support/sql-server.js';
import { ROOT, spawnNode } from '../support/process.js';
import { text } from '../support/streams.js';

const BINS = ['dstream', 'asb-sink', 'mssql-cdc'] as const;
const TOOL = /^(npx )?(dstream|asb-sink|mssql-cdc)\b|^\.\.\. \|/;

/** Commands that are pipes or redirections of our bins, from inline code and code blocks. */
function pipesIn(markdown: string): string[] {
  const spans = [...markdown.matchAll(/`([^`\n]+)`/g)].map((m) => m[1]!);
  // Lines of shell code blocks (```sh, ```bash or unlabeled), fence by fence.
  const blockLines: string[] = [];
  let lang: string | undefined;
  for (const line of markdown.split('\n')) {
    const fence = /^```(\w*)/.exec(line);
    if (fence) lang = lang === undefined ? fence[1]! : undefined;
    else if (lang !== undefined && ['', 'sh', 'bash'].includes(lang)) blockLines.push(line);
  }
  return [...spans, ...blockLines].map((s) => s.trim()).filter((s) => TOOL.test(s) && /[|<]/.test(s));
}

/** The example lines of a --help text (comment lines left out). */
function examplesIn(help: string): string[] {
  const at = help.indexOf('Examples:\n');
  if (at === -1) return [];
  return help
    .slice(at + 'Examples:\n'.length)
    .split('\n\n')[0]!
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && !l.startsWith('#') && /[|<]/.test(l));
}

/** What the real mssql-cdc provider writes on stdout for these options (until it has checkpointed every row). */
async function captureMssqlCdc(args: string[]): Promise<string> {
  const tables = (args[args.indexOf('--tables') + 1] ?? '').split(',');
  const m = new CdcModel();
  let id = 0;
  for (const t of tables) {
    const name = t.includes('.') ? t : `dbo.${t}`;
    m.createTable(name, [{ name: 'Id', type: 'int', nullable: false }, { name: 'Name', type: 'nvarchar' }], ['Id']);
    m.enableTable(name);
  }
  for (let i = 0; i < 3; i++) for (const t of tables) m.commit([{ table: t, op: 'insert', row: { Id: ++id, Name: `row ${id}` } }]);
  const stdout = new PassThrough();
  const signals = new PassThrough() as unknown as NodeJS.EventEmitter;
  let out = '';
  stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    const lines = out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string });
    if (lines.filter((l) => l.type !== 'checkpoint').length >= id && lines.at(-1)!.type === 'checkpoint') signals.emit('SIGTERM', 'SIGTERM');
  });
  // Without --state-file (a fresh start): the replay stands for a first run.
  const own = args.filter((a, i) => a !== '--state-file' && args[i - 1] !== '--state-file');
  const db = await sqlServerForTest(m);
  await runProvider(mssqlCdcProvider(), {
    argv: [...own, '--start', 'earliest', '--poll-interval-ms', '5', '--progress-ms', '0'],
    stdin: new PassThrough(),
    stdout,
    stderr: text(),
    env: { MSSQL_CONNECTION_STRING: db.connectionString },
    signals,
  });
  return out;
}

let broker: TestBroker;
let work: string;
let bin: string;
beforeAll(async () => {
  broker = await TestBroker.start();
  for (const t of ['Persons', 'Orders', 'Customers']) broker.createQueue(`${t}_cdc_events`);
  work = mkdtempSync(join(tmpdir(), 'dstream-pipes-'));
  bin = join(work, '.bin');
  mkdirSync(bin);
  for (const b of ['dstream', 'asb-sink']) {
    writeFileSync(join(bin, b), `#!/bin/sh\nexec "${process.execPath}" "${join(ROOT, 'dist/bin', `${b}.js`)}" "$@"\n`);
    chmodSync(join(bin, b), 0o755);
  }
  // The files the examples name, where they name them.
  copyFileSync(join(ROOT, 'examples/data/changes.ndjson'), join(work, 'changes.ndjson'));
  symlinkSync(join(ROOT, 'examples'), join(work, 'examples'));
  const routed = await spawnNode(join(ROOT, 'dist/bin/dstream.js'), ['route'], { input: readFileSync(join(work, 'changes.ndjson')), timeoutMs: 60_000 });
  canonicalRouted = routed.stdout;
}, 120_000);
let canonicalRouted = '';
afterAll(async () => {
  await broker?.close();
});

const delivered = () => [...broker.queues.values()].reduce((n, q) => n + q.messages.length, 0);
const rowsOf = (ndjson: string) => ndjson.split('\n').filter(Boolean).filter((l) => (JSON.parse(l) as { type: string }).type !== 'checkpoint').length;

async function sh(command: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const mssql = /(?:^|\| )mssql-cdc ([^|]*)\|/.exec(command);
  if (mssql) {
    writeFileSync(join(work, 'capture.ndjson'), await captureMssqlCdc(mssql[1]!.trim().split(/\s+/)));
    writeFileSync(join(bin, 'mssql-cdc'), `#!/bin/sh\nexec cat "${join(work, 'capture.ndjson')}"\n`);
    chmodSync(join(bin, 'mssql-cdc'), 0o755);
  }
  const line = command.replace(/^npx /, '').replace(/^\.\.\. \|/, 'cat routed.ndjson |');
  return new Promise((resolve) => {
    const child = spawn('bash', ['-o', 'pipefail', '-c', line], {
      cwd: work,
      env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, ASB_CONNECTION_STRING: broker.connectionString, MSSQL_CONNECTION_STRING: 'Server=127.0.0.1,1;Database=unused' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('every pipe in the README and in --help runs as printed', () => {
  it('finds them', async () => {
    const all = await allPipes();
    expect(all).toEqual(
      expect.arrayContaining([
        'mssql-cdc --tables Persons,Orders | dstream route | asb-sink',
        'mssql-cdc --tables Persons,sales.Orders --state-file s.json | dstream route | asb-sink --state-file s.json',
        '... | asb-sink --state-file state.json',
        'npx dstream route < examples/data/changes.ndjson',
        'asb-sink --state-file state.json < routed.ndjson   # connection string from ASB_CONNECTION_STRING',
      ]),
    );
  }, 60_000);

  it('each one exits 0 and delivers every row (asb-sink) or routes every line (dstream route)', async () => {
    for (const command of await allPipes()) {
      // Examples write routed.ndjson too (with other templates): each one starts from the same files.
      writeFileSync(join(work, 'routed.ndjson'), canonicalRouted);
      const before = delivered();
      const r = await sh(command);
      expect(r.code, `${command}\n${r.stderr}`).toBe(0);
      expect(r.stderr, command).not.toMatch(/error|failed/i);
      const source = command.includes('mssql-cdc') ? readFileSync(join(work, 'capture.ndjson'), 'utf8') : readFileSync(join(work, /< routed|\.\.\. \|/.test(command) ? 'routed.ndjson' : 'changes.ndjson'), 'utf8');
      const head = command.split('#')[0]!.trim();
      if (/\| asb-sink|^asb-sink/.test(head)) {
        expect(delivered() - before, command).toBe(rowsOf(source));
        const stateFile = /--state-file (\S+)$/.exec(head)?.[1];
        if (stateFile) expect(JSON.parse(readFileSync(join(work, stateFile), 'utf8'))).toHaveProperty('position');
      } else if (/> (\S+)$/.test(head)) {
        expect(rowsOf(readFileSync(join(work, /> (\S+)$/.exec(head)![1]!), 'utf8')), command).toBeGreaterThan(0);
      } else {
        expect(rowsOf(r.stdout), command).toBe(rowsOf(source));
      }
    }
  }, 600_000);
});

let cached: string[] | undefined;
async function allPipes(): Promise<string[]> {
  if (cached) return cached;
  const found = pipesIn(readFileSync(join(ROOT, 'README.md'), 'utf8'));
  for (const b of BINS) {
    const args = b === 'dstream' ? ['route', '--help'] : ['--help'];
    const help = await spawnNode(join(ROOT, 'dist/bin', `${b}.js`), args, { timeoutMs: 60_000 });
    found.push(...examplesIn(help.stdout));
  }
  return (cached = [...new Set(found)]);
}
