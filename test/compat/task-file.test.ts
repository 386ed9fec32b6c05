/** Task files written for the original dstream, under dstream's CLI. */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { ExitCodes } from '../../lib/index.js';
import { parseTaskFile } from '../../lib/config/tasks.js';
import { DSTREAM_BIN, spawnNode } from '../support/process.js';
import { compatFixture, dstream, taskFile } from './support.js';

const consoleOutput = (config: string) => `  output {\n    provider_path = "${compatFixture('dotnet-console-output.mjs')}"\n    config {\n${config}\n    }\n  }`;
const counter = `  input {\n    provider_path = "${compatFixture('dotnet-counter-input.mjs')}"\n    config {\n      interval = 1\n      maxCount = 2\n    }\n  }`;

// The shape of katasec/dstream's own dstream.hcl, with provider_path where it pulls from a registry.
const originalFile = `# MSSQL CDC Test Task
task "counter-demo" {
  type = "providers"
${counter}
${consoleOutput('      outputFormat = "simple"  # Use simple output format')}
}

task "mssql-to-asb" {
  type = "providers"
${counter}
${consoleOutput(`      connectionString = "{{ env \`ASB_CONNECTION_STRING\` }}"
      resourceGroup    = "rg-dstream-dev"
      tables           = ["dbo.Cars", "dbo.Persons"]`)}
}

task "oci-counter-demo" {
  type = "providers"
  input {
    provider_ref = "ghcr.io/katasec/dstream-counter-input-provider:v0.2.0"
    config {
      interval = 1000
    }
  }
${consoleOutput('      outputFormat = "simple"')}
}
`;

describe('task files of the original dstream', () => {
  it('an unset {{ env }} fails only the task that uses it', async () => {
    const t = taskFile(originalFile);
    const ok = await dstream(['validate', 'counter-demo'], t, { ASB_CONNECTION_STRING: '' });
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    const bad = await dstream(['validate', 'mssql-to-asb'], t);
    expect(bad.code).toBe(ExitCodes.USAGE);
    expect(bad.stderr).toMatch(new RegExp(`^dstream: ${t.config}:\\d+:\\d+: environment variable ASB_CONNECTION_STRING is not set`));
    const run = await dstream(['run', 'counter-demo'], t);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/dotnet-console-output\.mjs: Message #2: /);
  }, 60_000);

  it('provider_ref is refused for its task only, saying what to use instead', async () => {
    const t = taskFile(originalFile);
    const r = await dstream(['validate', 'oci-counter-demo'], t, { ASB_CONNECTION_STRING: 'x' });
    expect(r.code).toBe(ExitCodes.USAGE);
    expect(r.stderr).toMatch(
      new RegExp(`^dstream: ${t.config}:\\d+:\\d+: task "oci-counter-demo" input: provider_ref \\(a provider pulled from an OCI registry by the original dstream\\) is not supported; download the provider and give its path with provider_path, or use a built-in provider`),
    );
    const all = await dstream(['validate'], t, { ASB_CONNECTION_STRING: 'x' });
    expect(all.code).toBe(ExitCodes.USAGE);
    expect(all.stderr).toMatch(/provider_ref/);
  });

  it('plugin tasks, task-level config, locals and dstream {} of the original: refused plainly, only where used', async () => {
    const t = taskFile(`locals {
  conn = "server=db"
}

dstream {
  plugin_registry = "ghcr.io/katasec"
}

task "plugin-task" {
  type = "plugin"
  plugin_ref = "ghcr.io/katasec/dstream-ingester-mssql:v0.0.55"
  config {
    db_connection_string = "server=db"
  }
}

task "uses-locals" {
${counter.replace('interval = 1', 'interval = local.interval')}
${consoleOutput('      outputFormat = "simple"')}
}

task "fine" {
${counter}
${consoleOutput('      outputFormat = "simple"')}
}
`);
    const fine = await dstream(['validate', 'fine'], t);
    expect(fine.stderr).toBe('');
    expect(fine.code).toBe(0);
    const plugin = await dstream(['validate', 'plugin-task'], t);
    expect(plugin.code).toBe(ExitCodes.USAGE);
    expect(plugin.stderr).toMatch(/:10:3: task "plugin-task": type "plugin" \(the original dstream's gRPC plugins\) is not supported; use type = "providers" with input \{ \.\.\. \} and output \{ \.\.\. \} blocks/);
    const locals = await dstream(['validate', 'uses-locals'], t);
    expect(locals.code).toBe(ExitCodes.USAGE);
    expect(locals.stderr).toMatch(/task "uses-locals": locals are not supported \(local\.interval\); write the value in place, or take it from the environment with \{\{ env "NAME" \}\}/);
  });

  it('a task with two labels: exit 2 with its position', async () => {
    const text = `task "a" {\n${counter}\n${consoleOutput('')}\n}\n\ntask "b" "c" {\n${counter}\n${consoleOutput('')}\n}\n`;
    const t = taskFile(text);
    const line = text.split('\n').findIndex((l) => l.startsWith('task "b"')) + 1;
    const r = await dstream(['validate'], t);
    expect(r.code).toBe(ExitCodes.USAGE);
    expect(r.stderr).toBe(`dstream: ${t.config}:${line}:1: task "b" "c" has two labels; a task has one: task "name" { ... }\n`);
  });

  it('-c FILE and -l LEVEL of the original CLI are accepted', async () => {
    const t = taskFile(originalFile);
    const r = await spawnNode(DSTREAM_BIN, ['validate', 'counter-demo', '-c', t.config, '-l', 'debug'], { env: t.env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${t.config}: valid (task "counter-demo")\n`);
    expect(r.stderr).toBe('dstream: note: --log-level debug: dstream has no log levels; providers\' stderr is shown unless --quiet, which hides progress and provider lines\n');
  });

  it('an env value escaped for the original (pasted into HCL as is) is not escaped twice', async () => {
    const t = taskFile(originalFile.slice(0, originalFile.indexOf('task "oci-counter-demo"')));
    const r = await dstream(['init', 'mssql-to-asb'], t, { ASB_CONNECTION_STRING: 'Endpoint=sb://x/;SharedAccessKey=a\\"b' });
    expect(r.code, r.stderr).toBe(0);
    // The value is a"b, as the original CLI made it.
    const parsed = await parseTaskFile(readFileSync(t.config, 'utf8'), t.config, { ASB_CONNECTION_STRING: 'Endpoint=sb://x/;SharedAccessKey=a\\"b' });
    expect(parsed.tasks.find((x) => x.name === 'mssql-to-asb')!.output.config.connectionString).toBe('Endpoint=sb://x/;SharedAccessKey=a"b');
    // The .NET host logs the envelope it received: that same value, which dstream masks as a secret
    // (only the whole value as it reads in JSON, a"b escaped once, is masked whole).
    expect(r.stderr).toContain('"connectionString":"***"');
    expect(r.stderr).not.toContain('a\\"b');
  });
});
