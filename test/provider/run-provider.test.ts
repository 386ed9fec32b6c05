import { PassThrough } from 'node:stream';
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, ExitCodes, runProvider } from '../../lib/index.js';
import { fixture, ndjson, spawnNode } from '../support/process.js';

const provider = fixture('echo-provider.mjs');
const schemaDir = fileURLToPath(new URL('../../lib/protocol/schemas/', import.meta.url));
const ajv = new Ajv2020({ strict: false });
for (const f of readdirSync(schemaDir)) ajv.addSchema(JSON.parse(readFileSync(schemaDir + f, 'utf8')), f);
const matches = (schema: string, v: unknown) => ajv.validate(schema, v);
const row = (n: number) => ({ source: 't', type: 'cdc', data: { Id: n }, metadata: { TableName: 'Persons' } });
const cp = (n: number) => ({ source: 't', type: 'checkpoint', data: { position: n }, metadata: {} });

describe('runProvider, spawned as a real process', () => {
  it('answers a lifecycle verb with the handshake then one result line, logs on stderr only', async () => {
    const r = await spawnNode(provider, [], { input: ndjson({ command: 'init', config: {}, protocol: 1 }) });
    expect(r.code).toBe(0);
    const [ready, result, ...rest] = r.lines();
    expect(ready).toEqual({ status: 'ready', protocol: 1 });
    expect(matches('handshake.schema.json', ready)).toBe(true);
    expect(result).toEqual({ status: 'ok', command: 'init', resources: [{ kind: 'queue', name: 'Persons_cdc_events', action: 'create' }] });
    expect(matches('result.schema.json', result)).toBe(true);
    expect(rest).toEqual([]);
    expect(r.stderr).toBe('echo-provider: creating queues\n');
  });

  it('answers discover with the streams it will emit', async () => {
    const r = await spawnNode(provider, [], { input: ndjson({ command: 'discover', config: {} }) });
    expect(r.lines()[1]).toEqual({ status: 'ok', command: 'discover', streams: [{ name: 'Persons', schema: 'dbo', keys: ['Id'] }] });
  });

  it('refuses bad config with an error line naming the field, exit code 2, and no handshake', async () => {
    const r = await spawnNode(provider, [], { input: ndjson({ command: 'init', config: { mdoe: 'input', count: 'x' } }) });
    expect(r.code).toBe(ExitCodes.USAGE);
    const lines = r.lines();
    expect(lines).toHaveLength(1);
    expect(matches('handshake.schema.json', lines[0])).toBe(true);
    expect(lines[0]).toMatchObject({ status: 'error', code: ErrorCodes.CONFIG, command: 'init' });
    expect((lines[0] as { message: string }).message).toContain('config.mdoe: unknown key; did you mean "mode"?');
    expect((lines[0] as { message: string }).message).toContain('config.count: expected an integer, got string "x"');
    expect(r.stderr).toContain('config.mdoe');
  });

  it('never echoes a secret from the config in its errors', async () => {
    const r = await spawnNode(provider, [], { input: ndjson({ command: 'init', config: { token: { key: 'SharedAccessKey=SECRET123' } } }) });
    expect(r.code).toBe(ExitCodes.USAGE);
    expect(r.stdout + r.stderr).not.toContain('SECRET123');
    expect(r.stdout).toContain('config.token: expected a string, got an object');
  });

  it('answers an unknown verb listing what it supports, exit code 2', async () => {
    const r = await spawnNode(provider, [], { input: ndjson({ command: 'migrate', config: {} }) });
    expect(r.code).toBe(ExitCodes.USAGE);
    expect(r.lines()).toEqual([
      { status: 'error', message: 'unknown command "migrate"; echo-provider supports run, discover, init', code: ErrorCodes.UNKNOWN_COMMAND, command: 'migrate' },
    ]);
  });

  it('answers a known verb without a handler with "does not support"', async () => {
    const r = await spawnNode(provider, [], { input: ndjson({ command: 'destroy', config: {} }) });
    expect(r.code).toBe(ExitCodes.USAGE);
    expect(r.lines()[0]).toMatchObject({ status: 'error', message: 'echo-provider does not support "destroy"; it supports run, discover, init' });
  });

  it('turns a failing handler into an error result and exit code 1', async () => {
    const r = await spawnNode(provider, [], { input: ndjson({ command: 'init', config: { fail_on: 'init' } }) });
    expect(r.code).toBe(ExitCodes.FAILURE);
    const lines = r.lines();
    expect(lines[0]).toEqual({ status: 'ready', protocol: 1 });
    expect(lines[1]).toEqual({ status: 'error', message: 'namespace sb-test unreachable', command: 'init' });
    expect(matches('result.schema.json', lines[1])).toBe(true);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('exits with code 3 when stdin closes before any header', async () => {
    const r = await spawnNode(provider, [], { input: '' });
    expect(r.code).toBe(ExitCodes.PROTOCOL);
    expect(r.lines()[0]).toMatchObject({ status: 'error', code: ErrorCodes.PROTOCOL });
    expect(r.stderr).toMatch(/received no command header/);
  });

  it('exits with code 3 when the header is not JSON', async () => {
    const r = await spawnNode(provider, [], { input: 'run please\n' });
    expect(r.code).toBe(ExitCodes.PROTOCOL);
    expect(r.stderr).toMatch(/line 1: the command header is not valid JSON|line 1: the command header is/);
  });

  it('as an output provider: reads envelopes after the header and acknowledges each checkpoint on stdout', async () => {
    const input = ndjson({ command: 'run', config: { mode: 'output' }, protocol: 1 }, row(1), row(2), cp(1), row(3), cp(2));
    const r = await spawnNode(provider, [], { input });
    expect(r.code).toBe(0);
    expect(r.lines()).toEqual([{ status: 'ready', protocol: 1 }, cp(1), cp(2)]);
    for (const l of r.lines().slice(1)) expect(matches('checkpoint.schema.json', l)).toBe(true);
    expect(r.stderr).toContain('console.log must not reach stdout');
    expect(r.stderr).toContain('received 3 rows');
  });

  it('as an input provider: emits data and checkpoints after the handshake', async () => {
    const r = await spawnNode(provider, [], { input: ndjson({ command: 'run', config: { mode: 'input', count: 2 } }) });
    expect(r.code).toBe(0);
    const lines = r.lines();
    expect(lines[0]).toEqual({ status: 'ready', protocol: 1 });
    expect(lines.slice(1).map((l) => (l as { type: string }).type)).toEqual(['cdc', 'checkpoint', 'cdc', 'checkpoint']);
    for (const l of lines.slice(1)) expect(matches('envelope.schema.json', l)).toBe(true);
  });

  it('accepts a bare config as the first line (older executors) and then sends no handshake', async () => {
    const r = await spawnNode(provider, [], { input: ndjson({ mode: 'input', count: 1 }) });
    expect(r.code).toBe(0);
    expect(r.lines().map((l) => (l as { type: string }).type)).toEqual(['cdc', 'checkpoint']);
  });

  it('with a bare config, reports bad config on stderr only (an older executor would read stdout as data)', async () => {
    const r = await spawnNode(provider, [], { input: ndjson({ mode: 'sideways' }) });
    expect(r.code).toBe(ExitCodes.USAGE);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('echo-provider: config.mode: expected one of "input", "output", got string "sideways"\n');
  });

  it('a data envelope as the first line means a pipe: runs standalone from the environment, and that line is data', async () => {
    const r = await spawnNode(provider, [], { input: ndjson(row(1), row(2), cp(2)) });
    expect(r.code).toBe(0);
    // Standalone: no handshake, and the checkpoint it acknowledges is the only line on stdout.
    expect(r.lines()).toEqual([cp(2)]);
    expect(r.stderr).toContain('echo-provider: received 2 rows\n');
  });

  it('stops cleanly on SIGTERM: stops producing, flushes whole lines, exits 143', async () => {
    const r = await spawnNode(provider, [], {
      input: ndjson({ command: 'run', config: { mode: 'input', count: 0, delay_ms: 5 } }),
      keepStdinOpen: true,
      onSpawn: (child) => {
        let seen = 0;
        child.stdout!.on('data', () => {
          if (++seen === 3) child.kill('SIGTERM');
        });
      },
    });
    expect(r.code).toBe(ExitCodes.TERMINATED);
    expect(r.stdout.endsWith('\n')).toBe(true);
    const lines = r.lines(); // every line whole JSON
    expect(lines.length).toBeGreaterThan(2);
    expect(r.stderr).toMatch(/SIGTERM: stopping/);
    expect(r.stderr).toMatch(/stopped after emitting rows \(aborted: true\)/);
  });

  it('as an output provider on SIGTERM: stops reading stdin, drains what it has, exits 143', async () => {
    const r = await spawnNode(provider, [], {
      input: ndjson({ command: 'run', config: { mode: 'output', delay_ms: 1 } }, row(1), cp(1)),
      keepStdinOpen: true,
      onSpawn: (child) => {
        child.stdout!.once('data', () => setTimeout(() => child.kill('SIGTERM'), 50));
      },
    });
    expect(r.code).toBe(ExitCodes.TERMINATED);
    expect(r.lines()).toEqual([{ status: 'ready', protocol: 1 }, cp(1)]);
    expect(r.stderr).toContain('received 1 rows');
  });

  it('exits quietly with code 0 when its reader goes away (| head -1)', async () => {
    const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const sh = spawn('bash', ['-c', `set -o pipefail; "${process.execPath}" "${provider}" --mode input --count 0 | head -1 >/dev/null`]);
      let stderr = '';
      sh.stderr.on('data', (d) => (stderr += d));
      sh.on('close', (c) => resolve({ code: c, stderr }));
    });
    expect(stderr).not.toMatch(/EPIPE|Error|\n\s+at /);
    expect(code).toBe(0);
  });

  it('standalone: runs from options with no handshake, and --help describes the options', async () => {
    const r = await spawnNode(provider, ['--mode', 'input', '--count=1']);
    expect(r.code).toBe(0);
    expect(r.lines().map((l) => (l as { type: string }).type)).toEqual(['cdc', 'checkpoint']);
    const help = await spawnNode(provider, ['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: echo-provider \[run\|discover\|init\] \[options\]/);
    expect(help.stdout).toContain('--delay-ms <integer>');
    expect(help.stdout).toContain('env ECHO_TOKEN');
  });

  it('standalone: an unknown option is a usage error with a suggestion', async () => {
    const r = await spawnNode(provider, ['--mdoe', 'input']);
    expect(r.code).toBe(ExitCodes.USAGE);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('echo-provider: unknown option --mdoe; did you mean --mode? (see --help)\n');
  });

  it('standalone: a lifecycle verb prints its result line', async () => {
    const r = await spawnNode(provider, ['discover', '--mode', 'input']);
    expect(r.code).toBe(0);
    expect(r.lines()).toEqual([{ status: 'ok', command: 'discover', streams: [{ name: 'Persons', schema: 'dbo', keys: ['Id'] }] }]);
  });

  it('standalone run failure goes to stderr only, never into the pipe', async () => {
    const r = await spawnNode(provider, ['--fail-on', 'run']);
    expect(r.code).toBe(ExitCodes.FAILURE);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('echo-provider: run failed on purpose\n');
  });

  it('standalone: a verb the provider has no handler for is a usage error (exit 2) with its code', async () => {
    const out = new PassThrough();
    const err = new PassThrough();
    const chunks: Buffer[] = [];
    out.on('data', (c: Buffer) => chunks.push(c));
    err.resume();
    const only = { name: 'only-run', run: async () => undefined };
    const code = await runProvider(only, { argv: ['plan'], stdin: new PassThrough(), stdout: out, stderr: err, env: {}, signals: null });
    expect(code).toBe(ExitCodes.USAGE);
    expect(JSON.parse(Buffer.concat(chunks).toString())).toMatchObject({ status: 'error', code: ErrorCodes.UNSUPPORTED_COMMAND, message: 'only-run does not support "plan"; it supports run' });
  });
});
