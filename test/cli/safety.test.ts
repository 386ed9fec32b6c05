/**
 * The CLI as a careful operator expects it (issue 13): arguments checked before anything is
 * touched, state kept per task file, every class of task file mistake found by validate at
 * file:line:col and reported the same way by every verb, one confirmation rule for removals.
 */
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCodes } from '../../lib/index.js';
import { DSTREAM_BIN, ROOT, spawnNode } from '../support/process.js';

const tmp = (p: string) => mkdtempSync(join(tmpdir(), p));
// No inherited override: the default (state beside the task file) is what these tests are about.
const NO_OVERRIDE = { DSTREAM_STATE_DIR: undefined, DSTREAM_CONFIG: undefined };
const dstream = (args: string[], options: { cwd?: string; env?: Record<string, string | undefined>; input?: string } = {}) =>
  spawnNode(DSTREAM_BIN, args, { timeoutMs: 90_000, ...options, env: { ...NO_OVERRIDE, ...options.env } });

/** A task file with relative paths only: out/ for the files. */
function project(count = 40): { dir: string; config: string } {
  const dir = tmp('dstream-project-');
  const config = join(dir, 'dstream.hcl');
  writeFileSync(config, `task "demo" {\n  input {\n    provider = "generator"\n    config {\n      count = ${count}\n    }\n  }\n  output {\n    provider = "files"\n    config {\n      dir = "out"\n    }\n  }\n}\n`);
  return { dir, config };
}

const bytesIn = (dir: string) => (existsSync(dir) ? readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0) : 0);
const linesIn = (dir: string) => (existsSync(dir) ? readdirSync(dir).reduce((n, f) => n + readFileSync(join(dir, f), 'utf8').split('\n').filter(Boolean).length, 0) : 0);

describe('argument errors stop the command before it touches anything', () => {
  it('destroy --yes with an unknown option deletes nothing; init with one creates nothing', async () => {
    const p = project();
    expect((await dstream(['run', 'demo', '--config', p.config, '--quiet'])).code).toBe(0);
    const before = bytesIn(join(p.dir, 'out'));
    expect(before).toBeGreaterThan(0);
    const destroy = await dstream(['destroy', 'demo', '--config', p.config, '--yes', '--dry-run']);
    expect(destroy.code).toBe(ExitCodes.USAGE);
    expect(destroy.stderr).toBe('dstream: unknown option --dry-run; nothing was done. See dstream destroy --help.\n');
    expect(destroy.stdout).toBe('');
    expect(bytesIn(join(p.dir, 'out'))).toBe(before);
    expect(existsSync(join(p.dir, '.dstream', 'tasks', 'demo.json'))).toBe(true);

    const fresh = project();
    const init = await dstream(['init', 'demo', '--config', fresh.config, '--dry-run']);
    expect(init.code).toBe(ExitCodes.USAGE);
    expect(existsSync(join(fresh.dir, 'out'))).toBe(false);
  }, 180_000);

  it('a misspelt option, a missing task and an unknown verb are usage errors with a suggestion', async () => {
    const p = project();
    const typo = await dstream(['status', 'demo', '--confg', 'x'], { cwd: p.dir });
    expect(typo.code).toBe(ExitCodes.USAGE);
    expect(typo.stdout).toBe('');
    expect(typo.stderr).toContain('unknown option --confg (did you mean --config?)');
    const noTask = await dstream(['plan', '--config', p.config]);
    expect(noTask.code).toBe(ExitCodes.USAGE);
    expect(noTask.stderr).toBe('dstream: dstream plan needs a task name: dstream plan <task>. See dstream plan --help.\n');
    const apply = await dstream(['apply', 'demo'], { cwd: p.dir });
    expect(apply.code).toBe(ExitCodes.USAGE);
    expect(apply.stderr).toMatch(/^dstream: unknown command "apply"; did you mean init \(create the infrastructure\), then run/);
    const reset = await dstream(['reset', 'dmeo', '--yes'], { cwd: p.dir });
    expect(reset.code).toBe(ExitCodes.USAGE);
    expect(reset.stderr).toContain('no task "dmeo" in dstream.hcl; did you mean "demo"?');
  }, 120_000);

  it('reset without a task file: exit 2 naming the file it looked for, as every verb, and no state written', async () => {
    const dir = tmp('dstream-empty-');
    const none = await dstream(['reset', 'demo', '--yes'], { cwd: dir });
    expect(none.code).toBe(ExitCodes.USAGE);
    expect(none.stderr).toBe('dstream: no task file at dstream.hcl: create dstream.hcl, or name one with --config FILE (or DSTREAM_CONFIG)\n');
    const named = await dstream(['reset', 'demo', '--yes', '--config', 'elsewhere.hcl'], { cwd: dir });
    expect(named.code).toBe(ExitCodes.USAGE);
    expect(named.stderr).toContain('no task file at elsewhere.hcl');
    expect(readdirSync(dir)).toEqual([]);
  }, 60_000);
});

describe('state per task file', () => {
  it('two copies of a task file keep separate positions, and their relative paths are their own', async () => {
    const a = project(30);
    const b = tmp('dstream-copy-');
    cpSync(a.config, join(b, 'dstream.hcl'));
    const elsewhere = tmp('dstream-cwd-');
    // Run from an unrelated working directory: out/ and .dstream/ are beside the task file.
    expect((await dstream(['run', 'demo', '--config', a.config, '--quiet'], { cwd: elsewhere })).code).toBe(0);
    expect(linesIn(join(a.dir, 'out'))).toBe(30);
    expect(existsSync(join(elsewhere, 'out'))).toBe(false);
    const copy = await dstream(['run', 'demo', '--quiet'], { cwd: b });
    expect(copy.code).toBe(0);
    expect(copy.stderr).toMatch(/task "demo": 30 rows delivered/);
    expect(linesIn(join(b, 'out'))).toBe(30);
    expect(JSON.parse(readFileSync(join(b, '.dstream', 'tasks', 'demo.json'), 'utf8')).position).toMatchObject({ rows: 30 });
    // DSTREAM_STATE_DIR still overrides the place.
    const override = tmp('dstream-override-');
    const again = await dstream(['status', 'demo', '--json'], { cwd: b, env: { DSTREAM_STATE_DIR: override } });
    expect(JSON.parse(again.stdout).position).toBeNull();
  }, 180_000);

  it('destroy lists what it removes, the position included, and forgets it; reset says the output is appended to', async () => {
    const p = project(20);
    expect((await dstream(['run', 'demo', '--config', p.config, '--quiet'])).code).toBe(0);
    const reset = await dstream(['reset', 'demo', '--config', p.config, '--yes']);
    expect(reset.code).toBe(0);
    expect(reset.stderr).toContain(`- the stored position of task "demo" (${join(p.dir, '.dstream', 'tasks', 'demo.json')})`);
    expect(reset.stdout).toContain('The output still holds data; the next run appends to it (`dstream destroy demo` removes it to start clean):\n  file ');
    expect((await dstream(['run', 'demo', '--config', p.config, '--quiet'])).code).toBe(0);
    const refused = await dstream(['destroy', 'demo', '--config', p.config]);
    expect(refused.code).toBe(ExitCodes.USAGE);
    expect(refused.stderr).toContain('dstream: destroy task "demo" removes:\n  - file ');
    expect(refused.stderr).toContain('not confirmed, nothing removed; pass --yes');
    expect(linesIn(join(p.dir, 'out'))).toBe(40);
    const destroyed = await dstream(['destroy', 'demo', '--config', p.config, '--yes']);
    expect(destroyed.code).toBe(0);
    expect(destroyed.stdout).toContain('Position: forgotten');
    expect(linesIn(join(p.dir, 'out'))).toBe(0);
    expect(existsSync(join(p.dir, '.dstream', 'tasks', 'demo.json'))).toBe(false);
  }, 240_000);
});

describe('validate finds what would fail later, at file:line:col; every verb says it the same way', () => {
  const cases: Array<[string, (dir: string) => string, RegExp]> = [
    ['an unknown provider', () => 'provider = "generatr"', /:3:5: task "demo" input: no built-in provider "generatr"; did you mean "generator"\?/],
    ['a missing provider_path', () => 'provider_path = "./bin/nothing-here"', /:3:5: task "demo" input: provider_path bin\/nothing-here does not exist|:3:5: task "demo" input: provider_path .*nothing-here does not exist/],
    [
      'a provider_path that is not executable',
      (dir) => {
        mkdirSync(join(dir, 'bin'));
        writeFileSync(join(dir, 'bin', 'source'), '#!/bin/sh\n');
        chmodSync(join(dir, 'bin', 'source'), 0o644);
        return 'provider_path = "./bin/source"';
      },
      /:3:5: task "demo" input: provider_path .*source is not executable \(chmod \+x /,
    ],
    ['a config value of the wrong type', () => 'provider = "generator"\n    config {\n      seed  = 1\n      count = "ten"\n    }', /:6:7: task "demo" input\.config\.count: expected an integer, got string "ten"/],
  ];
  for (const [what, input, expected] of cases) {
    it(what, async () => {
      const dir = tmp('dstream-bad-');
      const config = join(dir, 'dstream.hcl');
      writeFileSync(config, `task "demo" {\n  input {\n    ${input(dir)}\n  }\n  output { provider = "files" }\n}\n`);
      const results = await Promise.all([['validate'], ['plan', 'demo'], ['run', 'demo']].map((args) => dstream([...args, '--config', config])));
      for (const r of results) {
        expect(r.code, r.stderr).toBe(ExitCodes.USAGE);
        expect(r.stderr).toMatch(expected);
        expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
        expect(r.stderr.startsWith(`dstream: ${config}:`)).toBe(true);
      }
      expect(existsSync(join(dir, 'out'))).toBe(false);
    }, 180_000);
  }

  it('--skip-env checks a file without its secrets; --json reports errors as JSON', async () => {
    const dir = tmp('dstream-ci-');
    const config = join(dir, 'dstream.hcl');
    writeFileSync(
      config,
      'task "q" {\n  input {\n    provider = "generator"\n    config { count = {{ env "ROWS" }} }\n  }\n  output {\n    provider = "asb-sink"\n    config {\n      connection_string = "{{ env "ASB_SECRET_FOR_TEST" }}"\n    }\n  }\n}\n',
    );
    const strict = await dstream(['validate', '--config', config, '--json']);
    expect(strict.code).toBe(ExitCodes.USAGE);
    expect(JSON.parse(strict.stdout)).toMatchObject({ error: { code: 'DSTREAM_ERR_CONFIG', file: config, line: 4, column: 22 } });
    const ci = await dstream(['validate', '--config', config, '--skip-env']);
    expect(ci.stderr).toBe('');
    expect(ci.code).toBe(0);
    expect(ci.stdout).toBe(`${config}: valid (task "q") (environment variables not checked)\n`);
  }, 120_000);

  it('--skip-env passes a sqlserver state store whose connection string comes from the environment, and still finds real errors', async () => {
    const dir = tmp('dstream-ci-');
    const config = join(dir, 'dstream.hcl');
    const file = (state: string) =>
      `task "q" {\n  input { provider = "generator" }\n  output { provider = "files" }\n  state {\n    store = "sqlserver"\n${state}  }\n}\n`;
    writeFileSync(config, file('    connection_string = "{{ env "STATE_DB_FOR_TEST" }}"\n'));
    const ci = await dstream(['validate', '--config', config, '--skip-env']);
    expect(ci.stderr).toBe('');
    expect(ci.code).toBe(0);
    expect(ci.stdout).toBe(`${config}: valid (task "q") (environment variables not checked)\n`);
    // Without --skip-env the unset variable is still an error, at its place.
    const strict = await dstream(['validate', '--config', config]);
    expect(strict.code).toBe(ExitCodes.USAGE);
    expect(strict.stderr).toMatch(new RegExp(`^dstream: ${config}:6:26: environment variable STATE_DB_FOR_TEST is not set`));
    // A connection string that is missing, or written empty, is a real error under --skip-env too.
    for (const state of ['', '    connection_string = ""\n']) {
      writeFileSync(config, file(state));
      const bad = await dstream(['validate', '--config', config, '--skip-env']);
      expect(bad.code, bad.stderr).toBe(ExitCodes.USAGE);
      expect(bad.stderr).toBe(`dstream: ${config}:4:3: task "q" state: store = "sqlserver" needs connection_string (for example "{{ env "MSSQL_CONNECTION_STRING" }}")\n`);
    }
    writeFileSync(config, file('    connection_string = "{{ env "STATE_DB_FOR_TEST" }}"\n    tabel = "x"\n'));
    const typo = await dstream(['validate', '--config', config, '--skip-env']);
    expect(typo.code).toBe(ExitCodes.USAGE);
    expect(typo.stderr).toMatch(new RegExp(`^dstream: ${config}:\\d+:\\d+: .*tabel.*did you mean "table"`));
  }, 120_000);
});

describe('versions', () => {
  it('--version is dstream\'s own, inside another project too, for every bin', async () => {
    const own = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string;
    const other = tmp('dstream-other-');
    writeFileSync(join(other, 'package.json'), '{"name":"someone-else","version":"9.9.9"}');
    for (const bin of ['dstream', 'asb-sink', 'mssql-cdc']) {
      const r = await spawnNode(join(ROOT, 'dist/bin', `${bin}.js`), ['--version'], { cwd: other, timeoutMs: 60_000 });
      expect(r.stdout, bin).toBe(`${own}\n`);
    }
  }, 120_000);
});
