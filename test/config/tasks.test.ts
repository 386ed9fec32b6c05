import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../lib/index.js';
import { loadTaskFile, parseTaskFile, taskNamed } from '../../lib/config/tasks.js';
import { renderTemplate } from '../../lib/config/template.js';
import { validateConfig } from '../../lib/config/schema.js';
import { BUILTINS, builtinNamed } from '../../lib/providers/builtins.js';

const GOOD = `# two tasks
task "demo" {
  type = "providers"
  input {
    provider = "generator"
    config {
      count  = 100
      tables = ["Persons", "Orders"]
      fast   = true
    }
  }
  output {
    provider = "files"
    config { dir = "out" }
  }
}

task "mssql-to-asb" {
  type = "providers"
  input { provider_path = "./bin/mssql-cdc" }
  output {
    provider_path = "./bin/asb-sink"
    config { connection_string = "{{ env "ASB" }}" }
  }
}
`;

const fail = async (text: string, env: Record<string, string> = {}) => {
  const err = await parseTaskFile(text, 'dstream.hcl', env).catch((e) => e);
  expect(err.code, String(err)).toBe(ErrorCodes.CONFIG);
  return err.message as string;
};

describe('dstream.hcl', () => {
  it('reads tasks with typed values, resolving provider_path against the file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstream-hcl-'));
    writeFileSync(join(dir, 'dstream.hcl'), GOOD);
    const file = await loadTaskFile(join(dir, 'dstream.hcl'), { ASB: 'Endpoint=sb://x/;SharedAccessKey=a"b\\c${d}' });
    expect(file.tasks.map((t) => [t.name, t.line])).toEqual([
      ['demo', 2],
      ['mssql-to-asb', 18],
    ]);
    const demo = taskNamed(file, 'demo');
    expect(demo.input).toMatchObject({ provider: 'generator', config: { count: 100, tables: ['Persons', 'Orders'], fast: true }, line: 6 });
    // Where each attribute is, for messages at file:line:column.
    expect(demo.input.at).toMatchObject({ provider: { line: 5, column: 5 }, config: { line: 6, column: 5 }, 'config.count': { line: 7 } });
    expect(demo.dir).toBe(dir);
    const real = taskNamed(file, 'mssql-to-asb');
    expect(real.input.providerPath).toBe(join(dir, 'bin/mssql-cdc'));
    // A value with quotes, backslashes and ${ survives intact inside a string.
    expect(real.output.config).toEqual({ connection_string: 'Endpoint=sb://x/;SharedAccessKey=a"b\\c${d}' });
  });

  it('reports HCL syntax errors at file:line:column', async () => {
    expect(await fail('task "a" {\n  type = "providers"\n  input {\n    config { count = }\n  }\n}\n')).toMatch(/^dstream\.hcl:4:22: Invalid expression; Expected the start of an expression/);
    // A diagnostic over several lines (HCL's `2,6-3,1`) in the same one format, nothing of HCL's left.
    const multi = await fail('task "a" {\n x = 1 2\n y = 3 4\n}\n');
    expect(multi).toMatch(/^dstream\.hcl:2:\d+: /);
    expect(multi).not.toMatch(/\d+,\d+|parse config|\[/);
  });

  it('handshake_timeout in a provider block: a duration, or an error at its attribute', async () => {
    const task = (v: string) => `task "a" {\n  input {\n    provider = "generator"\n    handshake_timeout = ${v}\n  }\n  output { provider = "files" }\n}\n`;
    expect((await parseTaskFile(task('"2m"'), 'dstream.hcl', {})).tasks[0]!.input.handshakeTimeoutMs).toBe(120_000);
    expect((await parseTaskFile(task('45'), 'dstream.hcl', {})).tasks[0]!.input.handshakeTimeoutMs).toBe(45_000);
    expect(await fail(task('"soon"'))).toBe('dstream.hcl:4:5: task "a" input: handshake_timeout must be a duration such as "90s", "2m" or a number of seconds; got "soon"');
  });

  it('names unknown keys with their position and a suggestion', async () => {
    expect(await fail('task "a" {\n  type = "providers"\n  inptu { provider = "generator" }\n  output { provider = "files" }\n}\n')).toBe('dstream.hcl:3:3: task "a": unknown "inptu"; did you mean "input"?');
    expect(await fail('task "a" {\n  input {\n    provider = "g"\n    confg { x = 1 }\n  }\n  output { provider = "f" }\n}\n')).toBe('dstream.hcl:4:5: task "a" input: unknown "confg"; did you mean "config"?');
    // HCL's own rule, reported where it applies (a block argument on the opening line must close there).
    expect(await fail('task "a" {\n  input { provider = "g"\n  }\n}\n')).toMatch(/^dstream\.hcl:2:25: Invalid single-argument block definition/);
    expect(await fail('tasks "a" {\n}\n')).toBe('dstream.hcl:1:1: unknown block or attribute "tasks"; did you mean "task"?; a task file holds task "<name>" { ... } blocks');
  });

  it('requires an input and an output, with exactly one of provider or provider_path', async () => {
    expect(await fail('task "a" {\n  output { provider = "files" }\n}\n')).toBe('dstream.hcl:1:1: task "a" has no input block: add input { provider = "..." } or input { provider_path = "..." }');
    expect(await fail('task "a" {\n  input {\n    provider = "g"\n    provider_path = "./x"\n  }\n  output { provider = "f" }\n}\n')).toBe('dstream.hcl:2:3: task "a" input: give exactly one of provider (built-in) or provider_path (executable)');
    expect(await fail('task "a" {\n  type = "plugin"\n  input { provider = "g" }\n  output { provider = "f" }\n}\n')).toMatch(/^dstream\.hcl:2:3: task "a": type "plugin" \(the original dstream's gRPC plugins\) is not supported/);
  });

  it('says which environment variable is missing, and where; defaults and the backtick form work', async () => {
    expect(await fail(GOOD)).toBe('dstream.hcl:23:35: environment variable ASB is not set (used by {{ env "ASB" }}); set it, or give a default: {{ env "ASB" | default "..." }} (dstream validate --skip-env checks a file without its secrets)');
    expect(renderTemplate('n = {{ env `N` | default "5" }}', {})).toBe('n = 5');
    expect(renderTemplate('n = {{ env "N" }}', { N: '7' })).toBe('n = 7');
    // Templates in comments are left alone; a # inside a string is not a comment.
    expect(renderTemplate('# use {{ env "NAME" }}\nx = "a#{{ env "N" }}" // {{ env "Z" }}', { N: '1' })).toBe('# use {{ env "NAME" }}\nx = "a#1" // {{ env "Z" }}');
    expect(() => renderTemplate('x = {{ envv "N" }}', {})).toThrow(/dstream\.hcl:1:5: cannot read template \{\{ envv "N" \}\}/);
  });

  it('never echoes a secret in its messages', async () => {
    const msg = await fail('task "a" {\n  input { provider = "g" }\n  output {\n    provider = "f"\n    config { cs = "{{ env "ASB" }}" }\n    bogus = 1\n  }\n}\n', { ASB: 'SharedAccessKey=TOPSECRET' });
    expect(msg).toBe('dstream.hcl:6:5: task "a" output: unknown "bogus"');
    expect(msg).not.toContain('TOPSECRET');
  });

  it('answers an unknown task with the tasks there are', async () => {
    const file = await parseTaskFile(GOOD, 'dstream.hcl', { ASB: 'x' });
    expect(() => taskNamed(file, 'dmeo')).toThrow('no task "dmeo" in dstream.hcl; did you mean "demo"? (tasks: demo, mssql-to-asb)');
  });

  it('names every task declared, also one with problems of its own, when asked for a task there is not', async () => {
    // Loaded for the task asked for, a problem confined to another task does not stop the load (the
    // task is left out): the answer still names it, so a typo of its name is recognised.
    const text = 'task "demo" {\n  type = "providers"\n}\ntask "other" {\n  input { provider = "generator" }\n  output { provider = "files" }\n}\n';
    const file = await parseTaskFile(text, 'dstream.hcl', {}, { task: 'dmeo' });
    expect(file.tasks.map((t) => t.name)).toEqual(['other']);
    expect(() => taskNamed(file, 'dmeo')).toThrow('no task "dmeo" in dstream.hcl; did you mean "demo"? (tasks: demo, other)');
  });

  it('the example task files validate, with their secrets from the environment', async () => {
    const root = join(__dirname, '..', '..', 'examples');
    const demo = await loadTaskFile(join(root, 'dstream.hcl'), {});
    expect(demo.tasks.map((t) => t.name)).toEqual(['demo', 'generator-to-asb']);
    const real = await loadTaskFile(join(root, 'mssql-to-asb.hcl'), { MSSQL_CONNECTION_STRING: 'Server=x;Password=p"w', ASB_CONNECTION_STRING: 'Endpoint=sb://x/' });
    expect(real.tasks[0]!.input.config).toMatchObject({ connection_string: 'Server=x;Password=p"w', tables: ['Persons', 'Orders', 'Customers'] });
    const missing = await loadTaskFile(join(root, 'mssql-to-asb.hcl'), {}).catch((e) => e);
    expect(missing.message).toMatch(/mssql-to-asb\.hcl:17:\d+: environment variable MSSQL_CONNECTION_STRING is not set/);
    const workers = await loadTaskFile(join(root, 'mssql-workers.hcl'), { MSSQL_CONNECTION_STRING: 'Server=x', ASB_CONNECTION_STRING: 'Endpoint=sb://x/' });
    expect(workers.tasks[0]!.state).toEqual({ store: 'sqlserver', connection_string: 'Server=x', table: 'dstream.checkpoints' });
    expect(workers.tasks[0]!.input.config).toMatchObject({ lease: true, checkpoint_table: 'dstream.checkpoints' });
    // The built-in providers accept these configs as they are.
    for (const t of [...real.tasks, ...workers.tasks, ...demo.tasks]) {
      for (const ref of [t.input, t.output]) validateConfig((await builtinNamed(BUILTINS, ref.provider!))!.config!, ref.config, { env: {} });
    }
  });

  it('reads a state block: the file store by default, or a SQL Server table', async () => {
    const text = (state: string) => `task "a" {\n  input { provider = "generator" }\n  output { provider = "files" }\n${state}}\n`;
    const plain = await parseTaskFile(text(''), 'dstream.hcl');
    expect(plain.tasks[0]!.state).toBeUndefined();
    const sql = await parseTaskFile(text('  state {\n    store = "sqlserver"\n    connection_string = "{{ env "DB" }}"\n    table = "ops.positions"\n  }\n'), 'dstream.hcl', { DB: 'Server=db;Password=hunter2' });
    expect(sql.tasks[0]!.state).toEqual({ store: 'sqlserver', connection_string: 'Server=db;Password=hunter2', table: 'ops.positions' });
    expect(await fail(text('  state {\n    store = "sqlserver"\n  }\n'))).toBe(
      'dstream.hcl:4:3: task "a" state: store = "sqlserver" needs connection_string (for example "{{ env "MSSQL_CONNECTION_STRING" }}")',
    );
    expect(await fail(text('  state {\n    stor = "file"\n  }\n'))).toMatch(/^dstream\.hcl:4:3: task "a" state\.stor: unknown key; did you mean "store"\?/);
    expect(await fail(text('  state {\n    store = "redis"\n  }\n'))).toMatch(/^dstream\.hcl:4:3: task "a" state\.store: expected one of "file", "sqlserver", got string "redis"$/);
  });

  it('reads a metrics block: port, and host when given; a bad one is named with its position', async () => {
    const text = (block: string) => `task "a" {\n  input { provider = "generator" }\n  output { provider = "files" }\n${block}}\n`;
    expect((await parseTaskFile(text(''), 'dstream.hcl')).tasks[0]!.metrics).toBeUndefined();
    expect((await parseTaskFile(text('  metrics {\n    port = 9464\n  }\n'), 'dstream.hcl')).tasks[0]!.metrics).toEqual({ port: 9464 });
    expect((await parseTaskFile(text('  metrics {\n    port = 0\n    host = "127.0.0.1"\n  }\n'), 'dstream.hcl')).tasks[0]!.metrics).toEqual({ port: 0, host: '127.0.0.1' });
    expect(await fail(text('  metrics {\n    port = 70000\n  }\n'))).toMatch(/^dstream\.hcl:4:3: task "a" metrics\.port: must be at most 65535, got 70000$/);
    expect(await fail(text('  metrics {\n    host = "::"\n  }\n'))).toMatch(/^dstream\.hcl:4:3: task "a" metrics\.port: /);
    expect(await fail(text('  metric {\n    port = 1\n  }\n'))).toMatch(/^dstream\.hcl:4:3: task "a": unknown "metric"; did you mean "metrics"\?/);
  });

  it('says where to put the file when there is none', async () => {
    const err = await loadTaskFile('/nonexistent/dstream.hcl').catch((e) => e);
    expect(err.message).toBe('no task file at /nonexistent/dstream.hcl: create dstream.hcl, or name one with --config FILE (or DSTREAM_CONFIG)');
  });
});
