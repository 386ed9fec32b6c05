/**
 * The dstream command line. Each verb is a function of lib/ taking parsed options and stdio, so
 * the bin stays a one-liner and every behaviour is testable without a process.
 *
 * yargs only parses: a command's handler picks the action, and the action runs after the whole
 * command line has been checked (unknown options, missing arguments). An argument error stops the
 * command before it touches anything.
 */
import yargs, { type Argv } from 'yargs';
import { didYouMean } from '../config/schema.js';
import { INVALID_POLICIES, type InvalidPolicy } from '../envelope/invalid.js';
import { invalidOption, messageOf } from '../errors.js';
import { ExitCodes } from '../protocol/exit-codes.js';
import { DEFAULT_TEMPLATE } from '../streams/destination.js';
import { dstreamVersion } from '../version.js';
import { reportError } from './output.js';
import { LOG_FORMAT_ENV, LOG_FORMATS, Logger, logFormatArg, logFormatOf, type LogFormat } from '../log.js';
import { DEFAULT_MAX_LINE_BYTES, routeCommand } from './route.js';
import type { TaskCommandOptions, TaskIO } from './tasks.js';

// Task verbs load the executor (Service Bus SDK, HCL parser) only when used: `dstream route`
// in a pipe starts without them.
const tasks = () => import('./tasks.js');

const COMMANDS = ['route', 'validate', 'plan', 'init', 'status', 'destroy', 'run', 'reset'] as const;

/** Verbs of other tools, and what dstream calls them. */
const SYNONYMS: Record<string, string> = {
  apply: 'init (create the infrastructure), then run (stream)',
  up: 'init',
  create: 'init',
  setup: 'init',
  start: 'run',
  stream: 'run',
  show: 'status',
  list: 'status',
  state: 'status',
  check: 'validate',
  lint: 'validate',
  delete: 'destroy',
  remove: 'destroy',
  down: 'destroy',
  rm: 'destroy',
  forget: 'reset',
};

const TASK_EPILOG = [
  'Tasks come from dstream.hcl (or --config FILE, or DSTREAM_CONFIG). Relative paths in it are taken from its',
  "directory, and the task's state (positions, Pulumi stacks) lives beside it in .dstream/ (or state { dir },",
  'or DSTREAM_STATE_DIR).',
  '',
  'Exit codes: 0 ok, 1 a provider failed, 2 bad config or options (or not confirmed), 130/143 stopped by SIGINT/SIGTERM.',
].join('\n');

const examples = (...lines: string[]) => `Examples:\n${lines.map((l) => `  ${l}`).join('\n')}\n\n${TASK_EPILOG}`;

function taskOptions<T>(y: Argv<T>) {
  return y
    .option('config', { alias: 'c', type: 'string', requiresArg: true, describe: 'task file (default ./dstream.hcl, or DSTREAM_CONFIG)' })
    // The original dstream's flag, accepted so its scripts keep working; dstream has nothing to set.
    .option('log-level', { alias: 'l', type: 'string', hidden: true })
    .option('json', { type: 'boolean', default: false, describe: 'print results (and errors) as JSON on stdout, for scripts' })
    .option('quiet', { type: 'boolean', default: false, describe: 'no progress or provider log lines (errors are still printed)' })
    .option('verbose', { type: 'boolean', default: false, describe: "errors keep a provider's last stderr lines even when they were shown live" })
    .option('log-format', LOG_FORMAT_OPTION);
}

const LOG_FORMAT_OPTION = { choices: LOG_FORMATS, requiresArg: true, describe: `log lines on stderr as text (default) or one JSON object each (time, level, task, provider, message, code); env ${LOG_FORMAT_ENV}` } as const;

type Action = () => Promise<number>;

export async function main(
  argv: string[],
  io: TaskIO = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env },
): Promise<number> {
  const json = argv.includes('--json');
  // The log format first: every line after this, usage errors included, is in it.
  let logFormat: LogFormat;
  try {
    const flag = logFormatArg(argv);
    logFormat = flag !== undefined ? logFormatOf(flag) : logFormatOf(io.env[LOG_FORMAT_ENV], LOG_FORMAT_ENV);
  } catch (err) {
    return reportError(io, { json }, err);
  }
  io = { ...io, logFormat };
  const log = new Logger({ stream: io.stderr, format: logFormat, name: 'dstream' });
  const logLevel = argv.findIndex((a) => a === '-l' || a === '--log-level' || a.startsWith('--log-level='));
  if (logLevel >= 0) {
    const value = argv[logLevel]!.includes('=') ? argv[logLevel]!.split('=')[1] : argv[logLevel + 1];
    log.info(`note: --log-level ${value ?? ''}: dstream has no log levels; providers' stderr is shown unless --quiet, which hides progress and provider lines`);
  }
  const usage = (message: string): number => {
    return reportError(io, { json }, invalidOption(message), undefined, log);
  };
  // A word that is not a command: say which one it resembles, before yargs prints all of them.
  const first = argv.find((a) => !a.startsWith('-'));
  if (first !== undefined && argv.indexOf(first) === 0 && !(COMMANDS as readonly string[]).includes(first)) {
    const guess = SYNONYMS[first.toLowerCase()] ?? didYouMean(first, COMMANDS);
    return usage(`unknown command "${first}"${guess ? `; did you mean ${guess}?` : ''} (commands: ${COMMANDS.join(', ')}; see dstream --help)`);
  }

  let action: Action | undefined;
  let usageError: string | undefined;
  const task = (a: { task?: string; config?: string; json?: boolean; quiet?: boolean; verbose?: boolean }): TaskCommandOptions => ({
    task: a.task,
    config: a.config,
    json: a.json,
    quiet: a.quiet,
    verbose: a.verbose,
  });
  const taskPositional = <T>(y: Argv<T>) => taskOptions(y).positional('task', { type: 'string', demandOption: true, describe: 'task name in the task file' });
  const cli = yargs(argv)
    .scriptName('dstream')
    .usage('$0 <command> [options]\n\nStream SQL Server change data capture to Azure Service Bus.')
    .command(
      'route',
      'Stamp each envelope with its destination queue (NDJSON stdin -> stdout)',
      (y) =>
        y
          .option('template', {
            type: 'string',
            requiresArg: true,
            default: DEFAULT_TEMPLATE,
            describe: 'destination name; placeholders {table}, {schema}, {database}',
          })
          .option('include', { type: 'string', array: true, requiresArg: true, describe: 'only these tables (name, schema.name, * wildcard); repeat or comma-separate' })
          .option('exclude', { type: 'string', array: true, requiresArg: true, describe: 'leave out these tables' })
          .option('on-invalid', { choices: INVALID_POLICIES, describe: 'what to do with a line that is not an envelope (default fail; dead-letter when --dead-letter is given)' })
          .option('dead-letter', { type: 'string', requiresArg: true, describe: 'append invalid records (raw line, reason, line number) to this file' })
          .option('max-line-bytes', { type: 'number', requiresArg: true, default: DEFAULT_MAX_LINE_BYTES, describe: 'longest accepted line' })
          .option('quiet', { type: 'boolean', default: false, describe: 'no notes on stderr (errors are still printed)' })
          .option('log-format', LOG_FORMAT_OPTION)
          .epilog(
            [
              'Examples:',
              '  # one queue per table, from SQL Server CDC to Service Bus',
              '  mssql-cdc --tables Persons,Orders | dstream route | asb-sink',
              '  # file to file, schema-qualified names, without the audit schema',
              "  dstream route --template '{schema}.{table}' --exclude 'audit.*' < changes.ndjson > routed.ndjson",
              '  # keep going past bad lines, keeping them for later',
              '  dstream route --on-invalid dead-letter --dead-letter bad.ndjson < changes.ndjson',
              '',
              'Exit codes: 0 ok, 2 bad options or destination names, 4 invalid record (policy fail), 1 other failure.',
            ].join('\n'),
          ),
      (args) => {
        action = () =>
          routeCommand(
            {
              template: args.template,
              include: splitList(args.include),
              exclude: splitList(args.exclude),
              onInvalid: args['on-invalid'] as InvalidPolicy | undefined,
              deadLetter: args['dead-letter'],
              maxLineBytes: args['max-line-bytes'],
              quiet: args.quiet,
            },
            { ...io, logFormat },
          );
      },
    )
    .command(
      'validate [task]',
      'Check dstream.hcl (and one task) without running anything',
      (y) =>
        taskOptions(y)
          .positional('task', { type: 'string', describe: 'check only this task' })
          .option('skip-env', { type: 'boolean', default: false, describe: 'check without the environment: a missing {{ env }} variable reads as a placeholder (CI without secrets)' })
          .epilog(examples('dstream validate', 'dstream validate demo --config examples/dstream.hcl', 'dstream validate --skip-env --json   # in CI, without the secrets')),
      (a) => {
        action = async () => (await tasks()).validateCommand({ ...task(a), skipEnv: a['skip-env'] }, io);
      },
    )
    .command(
      'plan <task>',
      'Show what init would create, change or destroy',
      (y) =>
        taskPositional(y)
          .option('detailed-exitcode', { type: 'boolean', default: false, describe: 'exit 0 without changes, 2 with changes, 1 on any error' })
          .epilog(examples('dstream plan demo', 'dstream plan demo --json', 'dstream plan demo --detailed-exitcode || echo "changes (2) or an error (1)"')),
      (a) => {
        action = async () => (await tasks()).lifecycleCommand('plan', { ...task(a), detailedExitcode: a['detailed-exitcode'] }, io);
      },
    )
    .command(
      'init <task>',
      "Create the task's infrastructure (queues), idempotently",
      (y) => taskPositional(y).epilog(examples('dstream init demo', 'dstream init generator-to-asb --config examples/dstream.hcl')),
      (a) => {
        action = async () => (await tasks()).lifecycleCommand('init', task(a), io);
      },
    )
    .command(
      'status <task>',
      'Show what exists, live counts, and the stored position',
      (y) => taskPositional(y).epilog(examples('dstream status demo', 'dstream status demo --json | jq .position')),
      (a) => {
        action = async () => (await tasks()).lifecycleCommand('status', task(a), io);
      },
    )
    .command(
      'destroy <task>',
      'Remove what the task created and its stored position (lists them; asks on a terminal, --yes otherwise)',
      (y) =>
        taskPositional(y)
          .option('yes', { type: 'boolean', default: false, describe: 'do not ask' })
          .epilog(examples('dstream destroy demo          # lists what goes, then asks for the task name', 'dstream destroy demo --yes    # scripts')),
      (a) => {
        action = async () => (await tasks()).lifecycleCommand('destroy', { ...task(a), yes: a.yes }, io);
      },
    )
    .command(
      'run <task>',
      'Stream the task until its input ends or SIGINT/SIGTERM; stores each acknowledged checkpoint',
      (y) =>
        taskPositional(y)
          .option('metrics-port', { type: 'number', describe: 'serve Prometheus metrics at /metrics, and /healthz, /readyz for probes, on this port (overrides metrics { port } in the task file)' })
          .option('metrics-host', { type: 'string', describe: 'with a metrics port: listen on this address only (default every interface)' })
          .epilog(examples('dstream run demo', 'dstream run demo --quiet --json   # one JSON summary line at the end', 'dstream run demo --metrics-port 9464   # curl localhost:9464/metrics')),
      (a) => {
        action = async () => (await tasks()).runCommand({ ...task(a), metricsPort: a['metrics-port'] as number | undefined, metricsHost: a['metrics-host'] as string | undefined }, io);
      },
    )
    .command(
      'reset <task>',
      'Forget the stored position (the next run starts over; asks on a terminal, --yes otherwise)',
      (y) =>
        taskPositional(y)
          .option('yes', { type: 'boolean', default: false, describe: 'do not ask' })
          .epilog(examples('dstream reset demo', 'dstream reset demo --yes && dstream run demo')),
      (a) => {
        action = async () => (await tasks()).resetCommand({ ...task(a), yes: a.yes }, io);
      },
    )
    .demandCommand(1, 'Name a command. See dstream --help.')
    .parserConfiguration({ 'camel-case-expansion': false })
    .strict()
    .help()
    .alias('h', 'help')
    .version(dstreamVersion())
    .wrap(Math.min(110, (io.stdout as { columns?: number }).columns ?? 110))
    .exitProcess(false)
    .fail((msg, err) => {
      usageError ??= msg ?? messageOf(err);
    });
  skipHelpCache(cli);
  let out: string;
  try {
    out = await new Promise<string>((resolve, reject) => {
      cli.parseAsync(argv, {}, (err, _parsed, output) => (err && !usageError ? reject(err) : resolve(output))).catch(reject);
    });
  } catch (err) {
    usageError ??= messageOf(err);
    out = '';
  }
  if (usageError !== undefined) {
    const command = COMMANDS.find((c) => c === first);
    return usage(`${explain(usageError, command)} See dstream ${command ? `${command} ` : ''}--help.`);
  }
  if (action === undefined) {
    if (out) io.stdout.write(`${out}\n`);
    return ExitCodes.OK;
  }
  return action();
}

/**
 * yargs renders the whole help text after every command it runs, in case it is shown later; dstream
 * never shows it after a command (--help and usage errors render it themselves), and rendering it
 * is a good part of every start-up. Left as it is when yargs has no such hook.
 */
function skipHelpCache(cli: Argv<unknown>): void {
  type Internals = { getInternalMethods?: () => { getUsageInstance?: () => { cacheHelpMessage?: () => void } } };
  const usage = (cli as unknown as Internals).getInternalMethods?.().getUsageInstance?.();
  if (typeof usage?.cacheHelpMessage === 'function') usage.cacheHelpMessage = () => undefined;
}

const KNOWN_OPTIONS = ['config', 'json', 'quiet', 'verbose', 'log-format', 'yes', 'skip-env', 'detailed-exitcode', 'template', 'include', 'exclude', 'on-invalid', 'dead-letter', 'max-line-bytes', 'metrics-port', 'metrics-host', 'help', 'version'];

/** yargs' messages, said the way the rest of dstream says things (with a did-you-mean for options). */
function explain(message: string, command: string | undefined): string {
  if (/^Not enough non-option arguments/.test(message) && command !== undefined) return `dstream ${command} needs a task name: dstream ${command} <task>.`;
  if (/^Missing required argument: task/.test(message) && command !== undefined) return `dstream ${command} needs a task name: dstream ${command} <task>.`;
  const valueless = /^Not enough arguments following: (.+)$/.exec(message);
  if (valueless) return `option --${valueless[1]} needs a value; nothing was done.`;
  const unknown = /^Unknown arguments?: (.+)$/.exec(message);
  if (unknown) {
    const names = unknown[1]!.split(', ');
    const hints = names.map((n) => didYouMean(n, KNOWN_OPTIONS)).map((g, i) => (g ? `--${names[i]} (did you mean --${g}?)` : `--${names[i]}`));
    return `unknown option${names.length > 1 ? 's' : ''} ${hints.join(', ')}; nothing was done.`;
  }
  return message.endsWith('.') ? message : `${message}.`;
}

function splitList(values: string[] | undefined): string[] | undefined {
  return values?.flatMap((v) => v.split(',')).map((s) => s.trim()).filter((s) => s.length > 0);
}
