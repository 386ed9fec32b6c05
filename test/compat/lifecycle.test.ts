/**
 * Providers written for the original dstream (katasec/dstream's Go CLI, katasec/dstream-sdk-dotnet,
 * katasec/dstream-ingester-mssql) under dstream's task verbs: fakes in ./fixtures print exactly
 * what the originals print, and the real CLI runs them.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCodes } from '../../lib/index.js';
import { compatFixture, dstream, taskFile } from './support.js';

const counterInput = (maxCount: number, interval = 1) => `  input {
    provider_path = "${compatFixture('dotnet-counter-input.mjs')}"
    config {
      interval = ${interval}
      maxCount = ${maxCount}
    }
  }`;
const goIngester = `  input {
    provider_path = "${compatFixture('go-ingester.mjs')}"
    config {
      db_connection_string = "server=localhost,1433;user id=sa;password=Passw0rd123;database=TestDB;encrypt=disable"
      poll_interval = "5s"
      max_poll_interval = "30s"
      tables = ["Persons", "Cars"]
      lock_config = {
        type = "none"
      }
    }
  }`;
const consoleOutput = (extra = '') => `  output {
    provider_path = "${compatFixture('dotnet-console-output.mjs')}"
    config {
      outputFormat = "simple"
      ${extra}
    }
  }`;

describe('lifecycle verbs with inputs of the original dstream', () => {
  it('a finite .NET SDK input is not asked to discover or plan: plan shows the output\'s own plan, exit 0', async () => {
    const t = taskFile(`task "counter" {\n  type = "providers"\n${counterInput(3)}\n${consoleOutput()}\n}\n`);
    const r = await dstream(['plan', 'counter'], t);
    expect(r.stderr).not.toMatch(/not a result line/);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('console_log_target:WILL_CREATE');
    // The note names the verb that was run, not only the discover that came first.
    expect(r.stderr).toMatch(/dstream: note: input .*dotnet-counter-input\.mjs answered a handshake without "protocol".*; it is not asked to discover or plan, as the original CLI never asked inputs\n/);
  });

  it('an endless .NET SDK input does not hang init: it is stopped at its handshake', async () => {
    const t = taskFile(`task "counter" {\n${counterInput(0, 5)}\n${consoleOutput()}\n}\n`);
    const r = await dstream(['init', 'counter'], t, {}, 20_000);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('console_log_target:stdout');
  });

  it('an idle Go ingester (reads its config to end of input, never answers) does not make status wait 30 s; streams come from the tables config', async () => {
    const t = taskFile(`task "mssql-test" {\n  type = "providers"\n${goIngester}\n${consoleOutput('tables = ["dbo.Cars", "dbo.Persons"]')}\n}\n`);
    const started = Date.now();
    const r = await dstream(['status', 'mssql-test'], t, {}, 25_000);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('Task mssql-test: 2 streams (Cars, Persons)');
    expect(r.stdout).toContain('console_log_target:HEALTHY');
    // The ingester never got to its database: it was stopped while it waited for the end of its config.
    expect(r.stderr).not.toMatch(/Successfully connected to database/);
    expect(r.stderr).toMatch(/dstream: note: input .*go-ingester\.mjs sent no handshake within 5000 ms.*; it is not asked to discover or status, as the original CLI never asked inputs/);
  });

  it('plan with a Go ingester and a dstream output: the output gets the ingester\'s tables as streams', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'dstream-compat-out-')), 'files');
    const t = taskFile(`task "t" {\n${goIngester}\n  output {\n    provider = "files"\n    config {\n      dir = "${out}"\n    }\n  }\n}\n`);
    const r = await dstream(['plan', 't'], t);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`+ create file ${join(out, 'Persons_cdc_events.ndjson')}`);
    expect(r.stdout).toContain(`+ create file ${join(out, 'Cars_cdc_events.ndjson')}`);
  });
});

describe('result lines of the original .NET SDK', () => {
  const generator = '  input {\n    provider = "generator"\n    config {\n      count = 3\n    }\n  }';

  it('"Success" is ok: the resources are listed, with the provider\'s message', async () => {
    const t = taskFile(`task "t" {\n${generator}\n${consoleOutput()}\n}\n`);
    for (const [verb, resource] of [['plan', 'console_log_target:WILL_CREATE'], ['init', 'console_log_target:stdout'], ['status', 'console_log_target:HEALTHY']] as const) {
      const r = await dstream([verb, 't'], t);
      expect(r.code, `${verb}: ${r.stderr}`).toBe(0);
      expect(r.stdout).toContain(resource);
      expect(r.stdout).toContain('demo_resource_count:3');
    }
    const json = await dstream(['status', 't', '--json'], t);
    expect(JSON.parse(json.stdout).output).toMatchObject({ status: 'ok', command: 'status', message: 'Infrastructure status retrieved successfully' });
    const destroyed = await dstream(['destroy', 't', '--yes'], t);
    expect(destroyed.code).toBe(0);
    expect(destroyed.stdout).toContain('console_error_target:stderr');
  }, 90_000);

  it('"Failed" is an error showing message and error, exit non-zero', async () => {
    const t = taskFile(`task "t" {\n${generator}\n${consoleOutput('failWith = "namespace sb-dstream-dev not found in rg-dstream-dev"')}\n}\n`);
    const r = await dstream(['init', 't'], t);
    expect(r.code).toBe(ExitCodes.FAILURE);
    expect(r.stderr).toMatch(/dotnet-console-output\.mjs: init failed: Infrastructure initialization failed: namespace sb-dstream-dev not found in rg-dstream-dev/);
    expect(r.stdout).toBe('');
  });
});
