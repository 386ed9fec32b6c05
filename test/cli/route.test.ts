import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCodes } from '../../lib/index.js';
import { DSTREAM_BIN, ndjson, ROOT, spawnNode } from '../support/process.js';

const row = (TableName: string, n: number, extra: Record<string, unknown> = {}) => ({
  source: 'mssql',
  type: 'cdc',
  data: { Id: n },
  metadata: { TableName, OperationType: 'Insert', LSN: `0x${n.toString(16).padStart(20, '0')}`, ...extra },
});
const cp = { source: 'mssql', type: 'checkpoint', data: { position: '0x01' }, metadata: {} };

describe('dstream route (spawned)', () => {
  it('routes stdin to stdout, stamping destinations and passing checkpoints', async () => {
    const r = await spawnNode(DSTREAM_BIN, ['route'], { input: ndjson(row('Persons', 1), row('Orders', 2), cp) });
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.lines()).toEqual([
      { ...row('Persons', 1), metadata: { ...row('Persons', 1).metadata, Destination: 'Persons_cdc_events' } },
      { ...row('Orders', 2), metadata: { ...row('Orders', 2).metadata, Destination: 'Orders_cdc_events' } },
      cp,
    ]);
  });

  it('routes the bundled example file (the README command)', async () => {
    const input = readFileSync(join(ROOT, 'examples/data/changes.ndjson'));
    const r = await spawnNode(DSTREAM_BIN, ['route'], { input });
    expect(r.code).toBe(0);
    const out = r.lines() as Array<{ type: string; metadata: { TableName?: string; Destination?: string } }>;
    expect(out.length).toBe(input.toString().trim().split('\n').length);
    for (const e of out) {
      if (e.type === 'checkpoint') expect(e.metadata.Destination).toBeUndefined();
      else expect(e.metadata.Destination).toBe(`${e.metadata.TableName}_cdc_events`);
    }
  });

  it('honours --template, --include and --exclude', async () => {
    const input = ndjson(row('Persons', 1), row('Orders', 2, { Schema: 'sales' }), row('Log', 3, { Schema: 'audit' }));
    const r2 = await spawnNode(DSTREAM_BIN, ['route', '--template', '{schema}.{table}', '--exclude', 'audit.*'], { input });
    expect((r2.lines() as Array<{ metadata: { Destination: string } }>).map((e) => e.metadata.Destination)).toEqual(['dbo.Persons', 'sales.Orders']);
    const r3 = await spawnNode(DSTREAM_BIN, ['route', '--include', 'Persons,Log'], { input });
    expect((r3.lines() as Array<{ metadata: { TableName: string } }>).map((e) => e.metadata.TableName)).toEqual(['Persons', 'Log']);
  });

  it('fails on an invalid line with its line number, exit code 4, and no stack trace', async () => {
    const r = await spawnNode(DSTREAM_BIN, ['route'], { input: `${ndjson(row('Persons', 1))}{oops\n${ndjson(row('Orders', 2))}` });
    expect(r.code).toBe(ExitCodes.INVALID_DATA);
    expect(r.stderr).toMatch(/^dstream route: line 2: not valid JSON \(.+\): \{oops \(choose --on-invalid skip or dead-letter to keep going\)\n$/);
  });

  it('a piped line that is not valid UTF-8 is an invalid record: fails with its line, or is skipped and counted', async () => {
    const input = Buffer.concat([Buffer.from(ndjson(row('Persons', 1))), Buffer.from('{"type":"cdc","data":{"N":"\xff"},"metadata":{"TableName":"T"}}\n', 'latin1'), Buffer.from(ndjson(row('Orders', 2)))]);
    const r = await spawnNode(DSTREAM_BIN, ['route'], { input });
    expect(r.code).toBe(ExitCodes.INVALID_DATA);
    expect(r.stderr).toMatch(/^dstream route: line 2: not valid UTF-8 \(byte 28 of the line\): /);
    const skip = await spawnNode(DSTREAM_BIN, ['route', '--on-invalid', 'skip'], { input });
    expect(skip.code).toBe(0);
    expect(skip.lines()).toHaveLength(2);
    expect(skip.stderr).toContain('dstream route: decode: skipped 1 invalid record (first: line 2: not valid UTF-8 (byte 28 of the line))');
  });

  it('--on-invalid skip keeps going and reports the count at the end', async () => {
    const r = await spawnNode(DSTREAM_BIN, ['route', '--on-invalid', 'skip'], {
      input: `${ndjson(row('Persons', 1))}{oops\n{"data":1}\n${ndjson(row('Orders', 2))}`,
    });
    expect(r.code).toBe(0);
    expect(r.lines()).toHaveLength(2);
    expect(r.stderr).toContain('dstream route: decode: skipped 1 invalid record (first: line 2: not valid JSON');
    expect(r.stderr).toContain('dstream route: route: skipped 1 invalid record (first: line 3: envelope has no metadata.TableName');
  });

  it('--dead-letter in a directory that does not exist: a clear error, no stack trace, even with no invalid line', async () => {
    const r = await spawnNode(DSTREAM_BIN, ['route', '--dead-letter', '/nonexistent/x'], { input: ndjson(row('Persons', 1)) });
    expect(r.code).toBe(ExitCodes.FAILURE);
    expect(r.stderr).toMatch(/^dstream route: could not open the dead-letter file \/nonexistent\/x: ENOENT.*\n$/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('--dead-letter FILE writes each invalid record with reason and line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-route-'));
    const file = join(dir, 'bad.ndjson');
    const r = await spawnNode(DSTREAM_BIN, ['route', '--dead-letter', file], { input: `{oops\n${ndjson(row('Persons', 1))}[]\n` });
    expect(r.code).toBe(0);
    expect(r.lines()).toHaveLength(1);
    const letters = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(letters.map((l) => [l.line, l.raw])).toEqual([
      [1, '{oops'],
      [3, '[]'],
    ]);
    expect(r.stderr).toContain('dead-lettered 2 invalid records');
  });

  it('says when a table name had to be changed to fit Service Bus rules', async () => {
    const r = await spawnNode(DSTREAM_BIN, ['route'], { input: ndjson(row('Order Details', 1)) });
    expect(r.stderr).toBe('dstream route: table dbo.Order Details -> "Order_Details_cdc_events" (name changed to fit Service Bus rules)\n');
    const q = await spawnNode(DSTREAM_BIN, ['route', '--quiet'], { input: ndjson(row('Order Details', 1)) });
    expect(q.stderr).toBe('');
  });

  it('reports a destination collision naming both tables, exit code 2', async () => {
    const r = await spawnNode(DSTREAM_BIN, ['route'], { input: ndjson(row('Persons', 1), row('persons', 2, { Schema: 'hr' })) });
    expect(r.code).toBe(ExitCodes.USAGE);
    expect(r.stderr).toMatch(/tables dbo.Persons and hr.persons both map to destination "persons_cdc_events"/);
  });

  it('rejects bad options with usage and exit code 2', async () => {
    const bad = await spawnNode(DSTREAM_BIN, ['route', '--on-invalid', 'drop']);
    expect(bad.code).toBe(ExitCodes.USAGE);
    expect(bad.stderr).toMatch(/Invalid values:[\s\S]*on-invalid/);
    const tpl = await spawnNode(DSTREAM_BIN, ['route', '--template', '{tabel}'], { input: '' });
    expect(tpl.code).toBe(ExitCodes.USAGE);
    expect(tpl.stderr).toMatch(/unknown placeholder \{tabel\}/);
    const none = await spawnNode(DSTREAM_BIN, []);
    expect(none.code).toBe(ExitCodes.USAGE);
    expect(none.stderr).toMatch(/Name a command/);
  });

  it('an option without its value (--template at the end) is an argument error before anything is read or written', async () => {
    const r = await spawnNode(DSTREAM_BIN, ['route', '--template'], { input: ndjson(row('Persons', 1)) });
    expect(r.code).toBe(ExitCodes.USAGE);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('dstream: option --template needs a value; nothing was done. See dstream route --help.\n');
    const dead = await spawnNode(DSTREAM_BIN, ['route', '--dead-letter', '--quiet'], { input: ndjson(row('Persons', 1)) });
    expect(dead.code).toBe(ExitCodes.USAGE);
    expect(dead.stdout).toBe('');
  });

  it('--help shows an example pipe', async () => {
    const r = await spawnNode(DSTREAM_BIN, ['route', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/mssql-cdc --tables Persons,Orders \| dstream route \| asb-sink/);
    expect(r.stdout).toContain('--on-invalid');
    // Only the options route uses.
    expect(r.stdout).not.toMatch(/--config|--json|--yes/);
  });

  it('exits 0 without a stack trace when its reader goes away (| head -1)', async () => {
    const big = ndjson(...Array.from({ length: 50_000 }, (_, i) => row('Persons', i)));
    const { code, stderr, stdout } = await new Promise<{ code: number | null; stderr: string; stdout: string }>((resolve) => {
      const sh = spawn('bash', ['-c', `set -o pipefail; "${process.execPath}" "${DSTREAM_BIN}" route | head -1`]);
      let stderr = '';
      let stdout = '';
      sh.stdout.on('data', (d) => (stdout += d));
      sh.stderr.on('data', (d) => (stderr += d));
      sh.stdin.on('error', () => {
        // bash may exit before it has read everything: that is the point of the test.
      });
      sh.on('close', (c) => resolve({ code: c, stderr, stdout }));
      sh.stdin.end(big);
    });
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout.trim().split('\n')).toHaveLength(1);
  });
});
