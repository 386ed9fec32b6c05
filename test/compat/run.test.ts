/** `dstream run` with providers of the original dstream (fakes in ./fixtures that print what the originals print). */
import { describe, expect, it } from 'vitest';
import { ExitCodes } from '../../lib/index.js';
import { compatFixture, dstream, sigtermOnStderr, taskFile } from './support.js';

const generator = (count: number) => `  input {\n    provider = "generator"\n    config {\n      count = ${count}\n    }\n  }`;
const consoleOutput = (format: string) => `  output {\n    provider_path = "${compatFixture('dotnet-console-output.mjs')}"\n    config {\n      outputFormat = "${format}"\n    }\n  }`;

describe('run with an output of the original .NET SDK', () => {
  it('gets data only (no checkpoint markers), and the summary says positions are not stored', async () => {
    const t = taskFile(`task "t" {\n${generator(3)}\n${consoleOutput('json')}\n}\n`);
    const r = await dstream(['run', 't'], t);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('Processed 3 messages. Stream ended.');
    expect(r.stderr).toMatch(/dstream: task "t": 3 rows sent, positions not stored: output .*dotnet-console-output\.mjs does not speak dstream's protocol \(it never acknowledges\); the next run starts where the input starts without a stored position/);
    const status = await dstream(['status', 't', '--json'], t);
    expect(JSON.parse(status.stdout).position).toBeNull();
  });

  it('what it prints on stdout (not protocol lines) is shown on stderr under its name, and run goes on', async () => {
    const t = taskFile(`task "t" {\n${generator(3)}\n${consoleOutput('simple')}\n}\n`);
    const r = await dstream(['run', 't'], t);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr.match(/^dotnet-console-output\.mjs: Message #\d+: \{.*\}$/gm)).toHaveLength(3);
    expect(r.stdout).toBe('');
    const json = taskFile(`task "t" {\n${generator(3)}\n${consoleOutput('json')}\n}\n`);
    const j = await dstream(['run', 't'], json);
    expect(j.stderr.match(/^dotnet-console-output\.mjs: \{"Payload":/gm)).toHaveLength(3);
  });
});

describe('run with the original Go MSSQL ingester', () => {
  const ingester = `  input {
    provider_path = "${compatFixture('go-ingester.mjs')}"
    config {
      db_connection_string = "server=localhost,1433;database=TestDB"
      poll_interval = "5s"
      max_poll_interval = "30s"
      tables = ["Persons", "Cars"]
    }
  }`;

  it('its envelopes reach an original output until SIGTERM', async () => {
    const t = taskFile(`task "mssql-test" {\n${ingester}\n${consoleOutput('simple')}\n}\n`);
    // Stopped once the ingester has published both tables' changes (it polls forever, as the original does).
    const r = await dstream(['run', 'mssql-test'], t, { FAKE_CDC_ROWS: '2' }, 25_000, sigtermOnStderr(/publishing\.\.\. table=Cars/));
    expect(r.code, r.stderr).toBe(ExitCodes.TERMINATED);
    expect(r.stderr.match(/^dotnet-console-output\.mjs: Message #\d+: \{"Id":"\d","Name":"name \d"\}$/gm)).toHaveLength(4);
    expect(r.stderr).toMatch(/dstream: task "mssql-test": 4 rows sent, positions not stored/);
  });

  it('a line on its stdout that is not JSON fails the run naming the provider, without a hint at options run does not have', async () => {
    const t = taskFile(`task "t" {\n${ingester}\n${consoleOutput('simple')}\n}\n`);
    const r = await dstream(['run', 't'], t, { FAKE_STDOUT_NOISE: 'connected to TestDB' });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/dstream: input .*go-ingester\.mjs: wrote line 1 on stdout that is not a protocol line \(not JSON\), starting "connected to TestDB/);
    expect(r.stderr).not.toMatch(/--on-invalid/);
  });
});
