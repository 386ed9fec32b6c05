/**
 * The dstream command line. Each verb is a function of lib/ taking parsed options and stdio, so
 * the bin stays a one-liner and every behaviour is testable without a process.
 */
import yargs from 'yargs';
import { INVALID_POLICIES, type InvalidPolicy } from '../envelope/invalid.js';
import { messageOf } from '../errors.js';
import { ExitCodes } from '../protocol/exit-codes.js';
import { DEFAULT_TEMPLATE } from '../streams/destination.js';
import { DEFAULT_MAX_LINE_BYTES, routeCommand } from './route.js';
import type { TaskIO } from './tasks.js';

// Task verbs load the executor (Service Bus SDK, HCL parser) only when used: `dstream route`
// in a pipe starts without them.
const tasks = () => import('./tasks.js');

const TASK_EPILOG = [
  'Tasks come from dstream.hcl (or --config FILE, or DSTREAM_CONFIG). State (checkpoints, Pulumi stacks) lives in',
  'DSTREAM_STATE_DIR (default ~/.dstream).',
  '',
  'Exit codes: 0 ok, 1 a provider failed, 2 bad config or options (or destroy without confirmation), 130/143 stopped by SIGINT/SIGTERM.',
].join('\n');

export async function main(
  argv: string[],
  io: TaskIO = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env },
): Promise<number> {
  let code: number = ExitCodes.OK;
  let usageError: string | undefined;
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
            default: DEFAULT_TEMPLATE,
            describe: 'destination name; placeholders {table}, {schema}, {database}',
          })
          .option('include', { type: 'string', array: true, describe: 'only these tables (name, schema.name, * wildcard); repeat or comma-separate' })
          .option('exclude', { type: 'string', array: true, describe: 'leave out these tables' })
          .option('on-invalid', { choices: INVALID_POLICIES, describe: 'what to do with a line that is not an envelope (default fail; dead-letter when --dead-letter is given)' })
          .option('dead-letter', { type: 'string', describe: 'append invalid records (raw line, reason, line number) to this file' })
          .option('max-line-bytes', { type: 'number', default: DEFAULT_MAX_LINE_BYTES, describe: 'longest accepted line' })
          .option('quiet', { type: 'boolean', default: false, describe: 'no notes on stderr (errors are still printed)' })
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
      async (args) => {
        code = await routeCommand(
          {
            template: args.template,
            include: splitList(args.include),
            exclude: splitList(args.exclude),
            onInvalid: args['on-invalid'] as InvalidPolicy | undefined,
            deadLetter: args['dead-letter'],
            maxLineBytes: args['max-line-bytes'],
            quiet: args.quiet,
          },
          io,
        );
      },
    )
    .option('config', { alias: 'c', type: 'string', global: true, describe: 'task file (default ./dstream.hcl, or DSTREAM_CONFIG)' })
    // The original dstream's flag, accepted so its scripts keep working; dstream has nothing to set.
    .option('log-level', { alias: 'l', type: 'string', global: true, hidden: true })
    .middleware((a) => {
      if (a.logLevel !== undefined) io.stderr.write(`dstream: note: --log-level ${String(a.logLevel)}: dstream has no log levels; providers' stderr is always shown, and run --quiet hides progress\n`);
    })
    .option('json', { type: 'boolean', global: true, default: false, describe: 'print results as JSON, for scripts' })
    .command('validate [task]', 'Check dstream.hcl (and one task) without running anything', (y) => y.positional('task', { type: 'string' }).epilog(TASK_EPILOG), async (a) => {
      code = await (await tasks()).validateCommand({ task: a.task, config: a.config, json: a.json }, io);
    })
    .command('plan <task>', 'Show what init would create, change or destroy', (y) => y.positional('task', { type: 'string', demandOption: true }).epilog(TASK_EPILOG), async (a) => {
      code = await (await tasks()).lifecycleCommand('plan', { task: a.task, config: a.config, json: a.json }, io);
    })
    .command('init <task>', "Create the task's infrastructure (queues), idempotently", (y) => y.positional('task', { type: 'string', demandOption: true }).epilog(TASK_EPILOG), async (a) => {
      code = await (await tasks()).lifecycleCommand('init', { task: a.task, config: a.config, json: a.json }, io);
    })
    .command('status <task>', 'Show what exists, live counts, and the stored position', (y) => y.positional('task', { type: 'string', demandOption: true }).epilog(TASK_EPILOG), async (a) => {
      code = await (await tasks()).lifecycleCommand('status', { task: a.task, config: a.config, json: a.json }, io);
    })
    .command(
      'destroy <task>',
      'Remove what the task created (asks on a terminal; --yes otherwise)',
      (y) => y.positional('task', { type: 'string', demandOption: true }).option('yes', { type: 'boolean', default: false, describe: 'do not ask' }).epilog(TASK_EPILOG),
      async (a) => {
        code = await (await tasks()).lifecycleCommand('destroy', { task: a.task, config: a.config, json: a.json, yes: a.yes }, io);
      },
    )
    .command(
      'run <task>',
      'Stream the task until its input ends or SIGINT/SIGTERM; stores each acknowledged checkpoint',
      (y) => y.positional('task', { type: 'string', demandOption: true }).option('quiet', { type: 'boolean', default: false, describe: 'no progress lines' }).epilog(TASK_EPILOG),
      async (a) => {
        code = await (await tasks()).runCommand({ task: a.task, config: a.config, json: a.json, quiet: a.quiet }, io);
      },
    )
    .command(
      'reset <task>',
      'Forget the stored position (the next run starts over; asks on a terminal)',
      (y) => y.positional('task', { type: 'string', demandOption: true }).option('yes', { type: 'boolean', default: false, describe: 'do not ask' }),
      async (a) => {
        code = await (await tasks()).resetCommand({ task: a.task, json: a.json, yes: a.yes }, io);
      },
    )
    .demandCommand(1, 'Name a command. See dstream --help.')
    .strict()
    .recommendCommands()
    .help()
    .alias('h', 'help')
    .version()
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .exitProcess(false)
    .fail((msg, err) => {
      usageError = msg ?? messageOf(err);
    });
  try {
    const out = await new Promise<string>((resolve, reject) => {
      cli.parseAsync(argv, {}, (err, _parsed, output) => (err && !usageError ? reject(err) : resolve(output))).catch(reject);
    });
    if (usageError !== undefined) {
      io.stderr.write(`${await cli.getHelp()}\n\n${usageError}\n`);
      return ExitCodes.USAGE;
    }
    if (out) io.stdout.write(`${out}\n`);
  } catch (err) {
    if (usageError !== undefined) {
      io.stderr.write(`${usageError}\n`);
      return ExitCodes.USAGE;
    }
    io.stderr.write(`dstream: ${messageOf(err)}\n`);
    return ExitCodes.FAILURE;
  }
  return code;
}

function splitList(values: string[] | undefined): string[] | undefined {
  return values?.flatMap((v) => v.split(',')).map((s) => s.trim()).filter((s) => s.length > 0);
}
