/**
 * docs/operations.md cannot be run here (systemd, Kubernetes, a container runtime), so it is
 * checked by reading: every command and flag in its code blocks is one the CLI's --help lists,
 * every task file in it passes `dstream validate`, every DSTREAM_* variable is one lib/ reads, and
 * the container build file copies only what exists.
 */
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DSTREAM_BIN, ROOT, spawnNode } from '../support/process.js';

const doc = readFileSync(join(ROOT, 'docs/operations.md'), 'utf8');
const blocks = [...doc.matchAll(/```(\w*)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1]!, text: m[2]! }));

const BINS: Record<string, string> = { dstream: DSTREAM_BIN, 'mssql-cdc': join(ROOT, 'dist/bin/mssql-cdc.js'), 'asb-sink': join(ROOT, 'dist/bin/asb-sink.js') };

/** Each command line of the page as words: shell lines (each part of a pipe), ExecStart=, and YAML args lists. */
function commands(): string[][] {
  const out: string[][] = [];
  for (const b of blocks) {
    if (b.lang === 'sh') {
      for (const line of b.text.split('\n')) for (const part of line.split('|')) out.push(part.trim().split(/\s+/).filter((w) => !/^[A-Z_]+=/.test(w)));
    }
    if (b.lang === 'ini') for (const m of b.text.matchAll(/^ExecStart=\S+ \S+\/dstream\.js (.+)$/gm)) out.push(['dstream', ...m[1]!.split(/\s+/)]);
    if (b.lang === 'yaml') for (const m of b.text.matchAll(/args: (\[.*\])/g)) out.push(['dstream', ...(JSON.parse(m[1]!) as string[])]);
  }
  return out.filter((words) => words[0] !== undefined && words[0] in BINS);
}

describe('docs/operations.md', () => {
  it('every command and flag in its code blocks is in the --help of that command', async () => {
    const cmds = commands();
    expect(cmds.length).toBeGreaterThan(8);
    const helps = new Map<string, string>();
    for (const [bin, ...args] of cmds) {
      const verb = bin === 'dstream' ? args[0]! : '';
      const key = `${bin} ${verb}`;
      if (!helps.has(key)) {
        const r = await spawnNode(BINS[bin!]!, [...(verb ? [verb] : []), '--help']);
        expect(r.code, `${key} --help: ${r.stderr}`).toBe(0);
        helps.set(key, r.stdout);
      }
      const help = helps.get(key)!;
      for (const flag of args.filter((a) => a.startsWith('--'))) {
        expect(help, `${bin} ${args.join(' ')}: ${flag}`).toMatch(new RegExp(`${flag}\\b`));
      }
    }
    // Every verb used is one of dstream's.
    const verbs = new Set(cmds.filter(([b]) => b === 'dstream').map(([, v]) => v));
    const top = (await spawnNode(DSTREAM_BIN, ['--help'])).stdout;
    for (const v of verbs) expect(top, `dstream ${v}`).toMatch(new RegExp(`dstream ${v}\\b`));
  }, 120_000);

  it('every task file in it passes dstream validate', async () => {
    const files = blocks.filter((b) => b.lang === 'hcl' && b.text.includes('task "'));
    expect(files.length).toBeGreaterThan(0);
    const dir = mkdtempSync(join(tmpdir(), 'dstream-ops-doc-'));
    for (const [i, b] of files.entries()) {
      const file = join(dir, `task${i}.hcl`);
      writeFileSync(file, b.text);
      const env = { MSSQL_CONNECTION_STRING: 'Server=sql.example,1433;Database=shop;User Id=u;Password=p;Encrypt=true', ASB_CONNECTION_STRING: 'Endpoint=sb://shop.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=k' };
      const r = await spawnNode(DSTREAM_BIN, ['validate', '--config', file], { env });
      expect(r.code, r.stderr).toBe(0);
    }
    // The page's task is the example file, as the page says.
    const norm = (t: string) =>
      t
        .split('\n')
        .map((l) => l.replace(/#.*$/, '').trimEnd())
        .filter((l) => l.trim().length > 0)
        .join('\n');
    expect(norm(files[0]!.text)).toBe(norm(readFileSync(join(ROOT, 'examples/mssql-workers.hcl'), 'utf8')));
  }, 60_000);

  it('every DSTREAM_* variable it names is read by lib/', () => {
    const source = (dir: string): string =>
      readdirSync(dir)
        .map((f) => join(dir, f))
        .map((p) => (statSync(p).isDirectory() ? source(p) : p.endsWith('.ts') ? readFileSync(p, 'utf8') : ''))
        .join('\n');
    const lib = source(join(ROOT, 'lib'));
    const names = new Set([...doc.matchAll(/\bDSTREAM_[A-Z_]+\b/g)].map((m) => m[0]).filter((n) => !n.startsWith('DSTREAM_ERR_')));
    expect(names.size).toBeGreaterThan(0);
    for (const n of names) expect(lib, n).toContain(n);
  });

  it('the container build file installs with npm ci --omit=dev, builds in another stage, and copies only what exists', () => {
    const dockerfile = readFileSync(join(ROOT, 'examples/Dockerfile'), 'utf8');
    const stages = dockerfile.split(/^FROM /m).slice(1);
    expect(stages).toHaveLength(2);
    expect(stages[0]).toMatch(/^RUN npm ci\b(?!.*--omit)/m);
    expect(stages[1]).toMatch(/^RUN npm ci --omit=dev --ignore-scripts\b/m);
    expect(stages[1]).toMatch(/^COPY --from=build \/app\/dist dist$/m);
    for (const m of dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) for (const src of m[1]!.split(/\s+/)) expect(existsSync(join(ROOT, src)), src).toBe(true);
    const entry = /^ENTRYPOINT \["node", "\/app\/(.+)"\]$/m.exec(dockerfile)![1]!;
    expect(entry).toBe('dist/bin/dstream.js');
    expect(existsSync(join(ROOT, entry))).toBe(true);
  });
});
