import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, spawnNode } from './support/process.js';

const ex = (name: string) => join(ROOT, 'examples', name);
const expected = (name: string) => readFileSync(ex(name), 'utf8');

describe('examples print what they say they print', () => {
  it('route-pipeline.mjs', async () => {
    const r = await spawnNode(ex('route-pipeline.mjs'));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(expected('route-pipeline.expected'));
  });

  it('count-provider.mjs', async () => {
    const input = `${JSON.stringify({ command: 'run', config: { label: 'demo' } })}\n${readFileSync(ex('data/changes.ndjson'), 'utf8')}`;
    const r = await spawnNode(ex('count-provider.mjs'), [], { input });
    expect(r.code).toBe(0);
    expect(`${r.stdout}--- stderr\n${r.stderr}`).toBe(expected('count-provider.expected'));
  });
});
