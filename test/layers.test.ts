import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

// The layering of lib/ is written down once, as the table in docs/architecture.md ("Layers"); this
// test reads that table and checks every relative import of lib/**/*.ts against it, and that no
// module imports itself back through any chain (type-only and dynamic imports count).

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

type Rules = Map<string, Set<string>>;
type Edge = { from: string; spec: string; to: string; line: number };

/** Reads the "may import" table between the `layers` markers of docs/architecture.md. */
function rulesOf(markdown: string): Rules {
  const start = markdown.indexOf('<!-- layers -->');
  const end = markdown.indexOf('<!-- /layers -->');
  if (start < 0 || end < start) throw new Error('docs/architecture.md has no <!-- layers --> table');
  const rules: Rules = new Map();
  for (const row of markdown.slice(start, end).split('\n')) {
    const cells = row.split('|').map((c) => c.trim());
    const area = /^`([a-z]+)`$/.exec(cells[1] ?? '')?.[1];
    if (!area) continue;
    rules.set(area, new Set([...(cells[3] ?? '').matchAll(/`([a-z*]+)`/g)].map((m) => m[1]!)));
  }
  return rules;
}

/** The area a file of lib/ belongs to: `entry` for the public index files, `core` for lib/*.ts and config/, else its top directory. */
function areaOf(file: string): string {
  const parts = file.split('/');
  if (parts[parts.length - 1] === 'index.ts') return 'entry';
  if (parts.length === 2 || parts[1] === 'config') return 'core';
  return parts[1]!;
}

function importsOf(file: string, text: string): Edge[] {
  const edges: Edge[] = [];
  const re = /(?:^|[\s;])(?:import|export)\s(?:[^'";]*?\sfrom\s*)?['"](\.[^'"]+)['"]|import\(\s*['"](\.[^'"]+)['"]\s*\)/g;
  for (const m of text.matchAll(re)) {
    const spec = (m[1] ?? m[2])!;
    const to = normalize(join(dirname(file), spec)).replace(/\.js$/, '.ts');
    edges.push({ from: file, spec, to, line: text.slice(0, m.index + m[0].indexOf(spec)).split('\n').length });
  }
  return edges;
}

function forbiddenEdges(rules: Rules, edges: Edge[]): string[] {
  const problems: string[] = [];
  for (const e of edges) {
    const from = areaOf(e.from);
    const to = areaOf(e.to);
    const allowed = rules.get(from);
    if (!allowed) {
      problems.push(`${e.from}: area "${from}" is missing from the layers table in docs/architecture.md`);
      continue;
    }
    if (to === 'entry') problems.push(`${e.from}:${e.line} imports '${e.spec}', a public entry point: import the module it re-exports`);
    else if (from !== to && !allowed.has(to) && !allowed.has('*')) problems.push(`${e.from}:${e.line} imports '${e.spec}': ${from}/ may not import ${to}/`);
  }
  return problems;
}

function cyclesOf(edges: Edge[]): string[] {
  const graph = new Map<string, string[]>();
  for (const e of edges) graph.set(e.from, [...(graph.get(e.from) ?? []), e.to]);
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const cycles: string[] = [];
  const visit = (n: string): void => {
    state.set(n, 'open');
    stack.push(n);
    for (const m of graph.get(n) ?? []) {
      if (state.get(m) === 'open') cycles.push([...stack.slice(stack.indexOf(m)), m].join(' -> '));
      else if (!state.has(m)) visit(m);
    }
    stack.pop();
    state.set(n, 'done');
  };
  for (const n of graph.keys()) if (!state.has(n)) visit(n);
  return cycles;
}

function libFiles(dir = 'lib'): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((e) => {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory()) return libFiles(path);
    return path.endsWith('.ts') ? [path] : [];
  });
}

const rules = rulesOf(readFileSync(join(ROOT, 'docs/architecture.md'), 'utf8'));
const edges = libFiles().flatMap((f) => importsOf(f, readFileSync(join(ROOT, f), 'utf8')));

describe('layers of lib/', () => {
  it('every import follows the table in docs/architecture.md', () => {
    expect(rules.size).toBeGreaterThan(10);
    expect(edges.length).toBeGreaterThan(200);
    expect(forbiddenEdges(rules, edges)).toEqual([]);
  });

  it('no module of lib/ imports itself back, through any chain', () => {
    expect(cyclesOf(edges)).toEqual([]);
  });

  it('names the file, line and import of a forbidden edge, an import of an entry point, and a cycle', () => {
    const sink = 'lib/sinks/service-bus/x.ts';
    const bad = importsOf(sink, "import { a } from '../../executor/atomic-file.js';\nimport type { B } from '../../index.js';\nexport { c } from '../deliver.js';");
    expect(forbiddenEdges(rules, bad)).toEqual([
      "lib/sinks/service-bus/x.ts:1 imports '../../executor/atomic-file.js': sinks/ may not import executor/",
      "lib/sinks/service-bus/x.ts:2 imports '../../index.js', a public entry point: import the module it re-exports",
    ]);
    const loop = [...importsOf('lib/infra/a.ts', "import type { B } from './b.js';"), ...importsOf('lib/infra/b.ts', "const a = () => import('./a.js');")];
    expect(cyclesOf(loop)).toEqual(['lib/infra/a.ts -> lib/infra/b.ts -> lib/infra/a.ts']);
  });

  it('the table names every area of lib/ and nothing else', () => {
    const areas = new Set(libFiles().map(areaOf));
    for (const area of rules.keys()) expect(areas, `area ${area} in the table`).toContain(area);
    for (const area of areas) expect(rules.has(area), `area ${area} of lib/ in the table`).toBe(true);
  });
});
