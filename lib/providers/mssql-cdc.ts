/**
 * The `mssql-cdc` input provider: SQL Server CDC as dstream envelopes. Run by `dstream run` (command
 * header, position in the header's state) or in a pipe:
 *   mssql-cdc --tables Persons,sales.Orders --state-file s.json | dstream route | asb-sink --state-file s.json
 * and answers discover/plan/init/status/destroy for the CDC setup it reads from.
 */
import { once } from 'node:events';
import { goDurationMs, type ConfigSchema } from '../config/schema.js';
import { DstreamError, ErrorCodes, invalidOption } from '../errors.js';
import type { ResourceReport } from '../protocol/messages.js';
import type { ProviderContext, ProviderDefinition } from '../provider/run-provider.js';
import { applySteps, diff, problemsOf, removal, type Step } from '../infra/reconcile.js';
import { readStateFile } from '../state/state-file.js';
import { DEFAULT_CHECKPOINT_TABLE } from '../state/sql-store.js';
import { sqlFailure } from '../sources/mssql/errors.js';
import { incrementLsn, lsnToHex } from '../sources/mssql/lsn.js';
import { resumeCheck } from '../sources/mssql/retention.js';
import type { CdcConnector, CdcQueries, SourceTable } from '../sources/mssql/queries.js';
import { parsePosition, readPosition } from '../sources/mssql/position.js';
import { agentStoppedMessage, checkTables, forTable, mssqlCdc, tableNotFound, type GapPolicy } from '../sources/mssql/reader.js';
import { disableTableCall, enableDatabaseCall, enableTableCall } from '../sources/mssql/sql.js';
import { describeConnection, sqlServerConnector } from '../sources/mssql/sqlserver.js';
import { parseTableRef, tableKey, type TableRef } from '../sources/mssql/tables.js';
import { rowCounter } from '../metrics/rows.js';
import { sourceBacklog, sourceObserver } from '../metrics/source.js';

/** The original ingester's lock_config: `{ type = "none" }` is dstream's default; its Azure Blob locks have no counterpart. */
const lockConfig = (v: unknown): { value: unknown } | { problem: string } =>
  typeof v === 'object' && v !== null && (v as { type?: unknown }).type === 'none'
    ? { value: false }
    : { problem: 'the original ingester\'s Azure Blob locks are not supported; workers share a task with lease = true (SQL Server application locks), and lock_config = { type = "none" } means lease = false' };

export const mssqlCdcConfig = {
  connection_string: {
    type: 'string',
    secret: true,
    env: 'MSSQL_CONNECTION_STRING',
    aliases: { db_connection_string: 'same' },
    description: 'SQL Server connection string (Server=host,1433;Database=...;User Id=...;Password=...); never printed',
  },
  tables: { type: 'string[]', required: true, description: 'tables to read: Persons (schema dbo) or sales.Orders' },
  start: { type: 'string', default: 'latest', description: 'without a stored position: latest (new changes only), earliest (all retained), or an LSN (0x...)' },
  snapshot: { type: 'boolean', default: false, description: 'emit the current rows (OperationType Read) before streaming, when there is no stored position' },
  snapshot_chunk_rows: { type: 'integer', minimum: 1, default: 10_000, description: 'a snapshot reads each table in chunks of this many rows in primary-key order, with a checkpoint after each (a restart resumes after the last key)' },
  update_before: { type: 'boolean', default: false, description: "also emit each update's before-image (OperationType UpdateBefore)" },
  on_gap: { type: 'string', enum: ['fail', 'snapshot', 'skip'], default: 'fail', description: 'when cleanup removed changes not yet read: stop, re-read the current rows, or skip them (with a warning)' },
  poll_interval_ms: { type: 'integer', minimum: 1, default: 500, aliases: { poll_interval: goDurationMs('poll_interval_ms') }, description: 'poll interval while changes keep coming' },
  max_poll_interval_ms: { type: 'integer', minimum: 1, default: 5000, aliases: { max_poll_interval: goDurationMs('max_poll_interval_ms') }, description: 'idle back-off limit' },
  max_transactions: { type: 'integer', minimum: 1, default: 10_000, description: 'commits read per window (bounds memory with a backlog)' },
  max_rows: { type: 'integer', minimum: 1, default: 10_000, description: 'rows read per table per window (a window ends at a commit boundary)' },
  query_mode: {
    type: 'string',
    enum: ['direct', 'function'],
    default: 'direct',
    description: 'direct: read cdc.[<instance>_CT] in its clustered order (operations in the order they happened; SELECT on schema cdc); function: cdc.fn_cdc_get_all_changes_<instance> (no __$command_id)',
  },
  request_timeout_ms: { type: 'integer', minimum: 0, description: "how long a statement may take to its first row (0: no limit); default: the connection string's Request Timeout, else 120000" },
  checkpoint_every_rows: { type: 'integer', minimum: 1, default: 1000, description: 'a checkpoint at the first commit boundary after this many rows (fewer while SQL Server is slow to confirm them)' },
  heartbeat_ms: { type: 'integer', minimum: 0, default: 10_000, description: 'while idle, a checkpoint this often (quiet tables keep up with retention)' },
  connect_attempts: { type: 'integer', minimum: 1, default: 5, description: 'attempts to connect at start-up' },
  reconnect_attempts: { type: 'integer', minimum: 0, default: 20, description: 'attempts to reconnect after a lost connection' },
  retry_delay_ms: { type: 'integer', minimum: 1, default: 1000, description: 'first back-off between attempts (doubles, up to 30 s)' },
  max_connections: { type: 'integer', minimum: 2, default: 10, description: 'connection pool size (raised to tables + 1: each table with changes in a window streams at once)' },
  lease: { type: 'boolean', default: false, aliases: { lock_config: lockConfig }, description: 'several workers share the task: each table is read by the worker holding its sp_getapplock lease' },
  max_tables_per_worker: { type: 'integer', minimum: 1, description: 'lease: most tables one worker reads (ceil(tables / workers) spreads them; default all, the others stand by)' },
  checkpoint_table: { type: 'string', default: DEFAULT_CHECKPOINT_TABLE, description: 'the SQL checkpoint store table (state { store = "sqlserver" }); leases read positions from it' },
  create_checkpoint_table: { type: 'boolean', default: false, description: 'init creates checkpoint_table (destroy drops it when no task has rows in it)' },
  enable_cdc: { type: 'boolean', default: false, description: 'init enables CDC on the database and tables where it is off (destroy undoes only that)' },
  task: { type: 'string', description: 'task name (leases, the marks init leaves); default: from the command header' },
  state_file: { type: 'string', path: true, description: 'standalone: resume after the checkpoint in this file (asb-sink --state-file writes it)' },
  progress_ms: { type: 'integer', minimum: 0, default: 10_000, description: 'progress on stderr every so often (0: never)' },
} satisfies ConfigSchema;

export interface MssqlCdcConfig {
  connection_string?: string;
  tables: string[];
  start: string;
  snapshot: boolean;
  snapshot_chunk_rows: number;
  update_before: boolean;
  on_gap: GapPolicy;
  poll_interval_ms: number;
  max_poll_interval_ms: number;
  max_transactions: number;
  max_rows: number;
  query_mode: 'direct' | 'function';
  request_timeout_ms?: number;
  checkpoint_every_rows: number;
  heartbeat_ms: number;
  connect_attempts: number;
  reconnect_attempts: number;
  retry_delay_ms: number;
  max_connections: number;
  lease: boolean;
  max_tables_per_worker?: number;
  checkpoint_table: string;
  create_checkpoint_table: boolean;
  enable_cdc: boolean;
  task?: string;
  state_file?: string;
  progress_ms: number;
}

/** The `mssql` driver with the config's `connection_string`. */
function connectorOf(config: MssqlCdcConfig): CdcConnector {
  if (config.connection_string === undefined || config.connection_string === '') {
    throw invalidOption('mssql-cdc needs a connection string: config connection_string, --connection-string, or MSSQL_CONNECTION_STRING');
  }
  // A string that names no server is a mistake to fix (exit 2), not a connection failure.
  if (/it names none/.test(describeConnection(config.connection_string))) {
    throw invalidOption('the SQL Server connection string names no server: it needs Server=host,port (or Data Source=...), for example Server=db.example,1433;Database=shop;User Id=...;Password=...');
  }
  return sqlServerConnector(config.connection_string);
}

const taskOf = (ctx: ProviderContext<MssqlCdcConfig>): string | undefined => ctx.config.task ?? ctx.header.task;

/** The position to resume after: the executor's (header state), else a --state-file. */
async function storedPosition(ctx: ProviderContext<MssqlCdcConfig>): Promise<unknown> {
  if (ctx.header.state !== undefined && ctx.header.state !== null) return ctx.header.state;
  const file = ctx.config.state_file;
  if (file === undefined) return undefined;
  const remedy = `remove it to start at ${ctx.config.start}`;
  const state = await readStateFile(file, remedy);
  if (state === undefined) {
    ctx.log(`no state file at ${file} yet: starting at ${ctx.config.start}`);
    return undefined;
  }
  try {
    parsePosition(state.position);
    return state.position;
  } catch (err) {
    throw new DstreamError(ErrorCodes.IO, `${file} holds no mssql-cdc position (${(err as Error).message}); ${remedy}`, { cause: err });
  }
}

async function withConnection<T>(ctx: ProviderContext<MssqlCdcConfig>, what: string, fn: (q: CdcQueries) => Promise<T>): Promise<T> {
  const connect = connectorOf(ctx.config);
  let q: CdcQueries;
  try {
    q = await connect({ maxConnections: 2 });
  } catch (err) {
    throw sqlFailure(err, (err as { where?: string }).where ?? 'the configured server', 'connecting');
  }
  try {
    return await fn(q);
  } catch (err) {
    throw sqlFailure(err, q.where, what);
  } finally {
    await q.close().catch((err: unknown) => ctx.log(`closing the connection: ${(err as Error).message}`));
  }
}

function refsOf(config: MssqlCdcConfig): TableRef[] {
  if (config.tables.length === 0) throw invalidOption('tables is empty: name at least one table (Persons or sales.Orders)');
  return config.tables.map(parseTableRef);
}

/** What init would do, from what exists: shared by plan (report) and init (report, then do it). */
/** What CDC setup needs: CDC on the database, on each table, and the checkpoint table when init creates it. */
type SetupItem = { kind: 'cdc database'; name: string } | { kind: 'cdc table'; name: string; ref: TableRef } | { kind: 'checkpoint table'; name: string; ref: TableRef };

/** What is there: `enabled` is CDC on for a database or table (a checkpoint table that exists is). */
interface SetupFact {
  kind: SetupItem['kind'];
  name: string;
  enabled: boolean;
}

/** The steps from the server as it is to the CDC setup the config asks for (database first: tables need it). */
async function setupSteps(q: CdcQueries, config: MssqlCdcConfig, task: string | undefined): Promise<Step[]> {
  const info = await q.databaseInfo();
  const wanted: SetupItem[] = [{ kind: 'cdc database', name: info.database }, ...refsOf(config).map((ref) => ({ kind: 'cdc table' as const, name: tableKey(ref), ref }))];
  const facts: SetupFact[] = [{ kind: 'cdc database', name: info.database, enabled: info.cdcEnabled }, ...(await q.sourceTables()).map((t) => ({ kind: 'cdc table' as const, name: tableKey(t), enabled: t.tracked }))];
  if (config.create_checkpoint_table) {
    const cp = parseTableRef(config.checkpoint_table);
    wanted.push({ kind: 'checkpoint table', name: tableKey(cp), ref: cp });
    if (await q.checkpointTableExists(cp)) facts.push({ kind: 'checkpoint table', name: tableKey(cp), enabled: true });
  }
  const needTask = () => {
    if (task === undefined) throw invalidOption('enable_cdc needs the task name (config task, or the executor\'s): init marks what it enabled with it');
    return task;
  };
  const blocked = (item: SetupItem, problem: string): Step => ({ report: { kind: item.kind, name: item.name, action: 'blocked', warnings: [problem] } });
  return diff(wanted, facts, {
    key: (item) => `${item.kind}:${item.name}`,
    actualKey: (fact) => `${fact.kind}:${fact.name}`,
    decide: (item, fact): Step => {
      if (fact?.enabled === true) return { report: { kind: item.kind, name: item.name, action: 'unchanged' } };
      switch (item.kind) {
        case 'cdc database':
          if (!config.enable_cdc) return blocked(item, `CDC is not enabled on database ${item.name}: run ${enableDatabaseCall(item.name)}; or set enable_cdc = true`);
          return { report: { kind: item.kind, name: item.name, action: 'create', changes: ['EXEC sys.sp_cdc_enable_db'] }, apply: () => q.enableDatabase(needTask()) };
        case 'cdc table':
          if (fact === undefined) return blocked(item, `table ${item.name} does not exist in ${q.where}`);
          if (!config.enable_cdc) return blocked(item, `CDC is not enabled on table ${item.name}: run ${enableTableCall(item.ref)}; or set enable_cdc = true`);
          return { report: { kind: item.kind, name: item.name, action: 'create', changes: [enableTableCall(item.ref)] }, apply: () => q.enableTable(item.ref, needTask()) };
        case 'checkpoint table':
          return { report: { kind: item.kind, name: item.name, action: 'create' }, apply: () => q.createCheckpointTable(item.ref) };
      }
    },
  });
}

/**
 * Workers sharing a task hand tables over through positions in the SQL checkpoint table: the
 * executor must store acknowledged positions there, or a worker taking a table over would start
 * it from `start` and skip or repeat changes.
 */
function checkLeaseSetup(ctx: ProviderContext<MssqlCdcConfig>, task: string | undefined): void {
  if (task === undefined) throw invalidOption('lease = true needs the task name (config task, or the executor\'s): leases are named after it');
  const store = ctx.header.store;
  const table = tableKey(parseTableRef(ctx.config.checkpoint_table));
  if (ctx.standalone || store === undefined || store.kind !== 'sqlserver') {
    throw invalidOption(
      `lease = true: workers hand tables over through positions in ${table}, so the task must keep its positions there: ` +
        `add state { store = "sqlserver", connection_string = ..., table = "${table}" } to the task${ctx.standalone ? ' and run it with dstream run' : ''}`,
    );
  }
  if (store.table !== undefined && store.table !== table) {
    throw invalidOption(`lease = true: the task stores positions in ${store.table}, but checkpoint_table is ${table}; name the same table in both`);
  }
}

/**
 * destroy's step for one table: CDC off where this task's init turned it on. A table dropped since
 * (its capture instance went with it) or whose CDC someone else turned off needs no disabling; a
 * table that cannot be done is reported with what to run, and the other tables still go.
 */
function tableRemoval(q: CdcQueries, ref: TableRef, table: SourceTable | undefined, by: string | undefined, task: string | undefined): Step {
  const key = tableKey(ref);
  if (table === undefined) {
    return { report: { kind: 'cdc table', name: key, action: 'unchanged', exists: false, warnings: [`table ${key} no longer exists in ${q.where}: its capture instance was dropped with it, nothing to undo`] } };
  }
  if (by === undefined || by !== task) {
    return { report: { kind: 'cdc table', name: key, action: 'exists-unmanaged', warnings: [by === undefined ? 'CDC was not enabled by dstream: left as it is' : `enabled by task "${by}": left as it is`] } };
  }
  if (!table.tracked) {
    return { report: { kind: 'cdc table', name: key, action: 'delete', changes: ['CDC was already off: only the mark init left is removed'] }, apply: () => q.unmarkTable(ref) };
  }
  const step: Step = {
    report: { kind: 'cdc table', name: key, action: 'delete' },
    apply: () =>
      q.disableTable(ref).catch((err: unknown) => {
        step.report.action = 'blocked';
        step.report.warnings = [`CDC could not be disabled: ${(err as Error).message}; run ${disableTableCall(ref)}`];
      }),
  };
  return step;
}

export function mssqlCdcProvider(): ProviderDefinition<MssqlCdcConfig> {
  return {
    name: 'mssql-cdc',
    description: 'Reads SQL Server change data capture (CDC) in commit order, with checkpoints at transaction boundaries.',
    config: mssqlCdcConfig,
    graceMs: 15_000,
    destroys: 'CDC on the tables where init enabled it (their change data goes with it), and the checkpoint table init created',
    examples: [
      'mssql-cdc --tables Persons,sales.Orders --state-file s.json | dstream route | asb-sink --state-file s.json   # MSSQL_CONNECTION_STRING, ASB_CONNECTION_STRING from the environment',
      'mssql-cdc discover --tables Persons',
      'mssql-cdc status --tables Persons,Orders --state-file s.json',
    ],

    async run(ctx) {
      const c = ctx.config;
      const after = await storedPosition(ctx);
      const task = taskOf(ctx);
      if (c.lease) checkLeaseSetup(ctx, task);
      const source = mssqlCdc({
        connect: connectorOf(c),
        tables: c.tables,
        start: c.start,
        after,
        snapshot: c.snapshot,
        snapshotChunkRows: c.snapshot_chunk_rows,
        updateBefore: c.update_before,
        onGap: c.on_gap,
        pollIntervalMs: c.poll_interval_ms,
        maxPollIntervalMs: c.max_poll_interval_ms,
        maxTransactions: c.max_transactions,
        maxRows: c.max_rows,
        queryMode: c.query_mode,
        ...(c.request_timeout_ms !== undefined ? { requestTimeoutMs: c.request_timeout_ms } : {}),
        checkpointEveryRows: c.checkpoint_every_rows,
        heartbeatMs: c.heartbeat_ms,
        connectAttempts: c.connect_attempts,
        reconnectAttempts: c.reconnect_attempts,
        retryDelayMs: c.retry_delay_ms,
        maxConnections: c.max_connections,
        ...(c.lease ? { lease: { task: task!, checkpointTable: parseTableRef(c.checkpoint_table), ...(c.max_tables_per_worker ? { maxTables: c.max_tables_per_worker } : {}) } } : {}),
        signal: ctx.signal,
        log: ctx.log,
        onState: sourceObserver({ metrics: ctx.metrics, health: ctx.health, provider: 'mssql-cdc', ...(c.lease ? { leaseTables: c.tables.map((t) => tableKey(parseTableRef(t))) } : {}) }),
      });
      sourceBacklog(ctx.metrics, 'mssql-cdc', source.backlog);
      const count = ctx.metrics ? rowCounter(ctx.metrics) : undefined;
      ctx.log(`reading ${c.tables.join(', ')} ${after === undefined ? `(no stored position: start = ${c.start})` : 'after the stored position'}`);
      let rows = 0;
      let lsn = '';
      let last = { at: Date.now(), rows: 0 };
      const timer =
        c.progress_ms > 0
          ? setInterval(() => {
              const now = Date.now();
              ctx.log(`${rows} rows read (${Math.round(((rows - last.rows) * 1000) / Math.max(1, now - last.at))} rows/s)${lsn ? `, at LSN ${lsn}` : ''}`);
              last = { at: now, rows };
            }, c.progress_ms).unref()
          : undefined;
      try {
        for await (const envelope of source) {
          if (envelope.type === 'cdc') {
            rows++;
            lsn = envelope.metadata.LSN;
            count?.(envelope);
          }
          if (!ctx.output.write(envelope)) await once(ctx.output, 'drain');
        }
      } finally {
        if (timer) clearInterval(timer);
      }
      ctx.log(`stopped after ${rows} rows`);
    },

    discover: (ctx) =>
      withConnection(ctx, 'discovering tables', async (q) => {
        const refs = refsOf(ctx.config);
        const info = await q.databaseInfo();
        const all = new Map((await q.tableColumns()).map((t) => [tableKey(t), t]));
        const streams = refs.map((ref) => {
          const t = all.get(tableKey(ref));
          if (t === undefined) throw tableNotFound(tableKey(ref), q.where, [...all.keys()]);
          return { name: t.table, schema: t.schema, database: info.database, keys: t.primaryKey, columns: t.columns };
        });
        return { streams };
      }),

    plan: (ctx) =>
      withConnection(ctx, 'planning', async (q) => {
        const steps = await setupSteps(q, ctx.config, taskOf(ctx));
        const problems = problemsOf(steps);
        const resources = steps.map((s) => s.report);
        const changes = resources.filter((r) => r.action === 'create').length;
        return { resources, summary: problems.length > 0 ? `init would stop: ${problems.length} problem(s) to fix first` : `init would make ${changes} change(s)` };
      }),

    init: (ctx) =>
      withConnection(ctx, 'init', async (q) => {
        const steps = await setupSteps(q, ctx.config, taskOf(ctx));
        const problems = problemsOf(steps);
        if (problems.length > 0) throw new DstreamError(ErrorCodes.CDC_NOT_ENABLED, `init cannot go on: ${problems.join('; ')}`, { details: { problems } });
        const resources = await applySteps(steps);
        const agent = await q.agentState();
        if (agent === 'stopped') resources.push({ kind: 'sql server agent', name: q.where, action: 'exists-unmanaged', warnings: [agentStoppedMessage(q.where)] });
        await checkTables(q, refsOf(ctx.config));
        return { resources: resources.map((r) => (r.action === 'create' ? { ...r, done: true } : r)) };
      }),

    status: (ctx) =>
      withConnection(ctx, 'status', async (q) => {
        const refs = refsOf(ctx.config);
        const info = await q.databaseInfo();
        if (!info.cdcEnabled) return { resources: [{ kind: 'cdc database', name: info.database, exists: false }] };
        const instances = await q.captureInstances();
        const max = await q.maxLsn();
        const maxTime = max === null ? null : await q.lsnTime(max);
        const stored = await storedPosition(ctx);
        const { tables: positions, snapshots } = stored === undefined ? { tables: new Map<string, Buffer>(), snapshots: new Map() } : readPosition(stored);
        const agent = await q.agentState();
        const resources: ResourceReport[] = [];
        let tables: Map<string, SourceTable> | undefined;
        for (const ref of refs) {
          const key = tableKey(ref);
          const own = forTable(instances, ref);
          if (own.length === 0) {
            // Which of the two: the table is gone (dropped, with its capture instance), or CDC is off on it.
            tables ??= new Map((await q.sourceTables()).map((t) => [tableKey(t), t]));
            const why = tables.has(key) ? `CDC is not enabled on table ${key}: run ${enableTableCall(ref)}` : `table ${key} does not exist in ${q.where}: dropped or renamed? remove it from tables`;
            resources.push({ kind: 'cdc table', name: key, exists: false, warnings: [why] });
            continue;
          }
          const current = own[own.length - 1]!;
          const min = own[0]!.startLsn;
          const at = positions.get(key);
          const r: ResourceReport = {
            kind: 'cdc table',
            name: key,
            instance: own.map((i) => i.name).join(', '),
            minLsn: min === null ? null : lsnToHex(min),
            maxLsn: max === null ? null : lsnToHex(max),
            position: at === undefined ? null : lsnToHex(at),
            columns: current.columns.length,
          };
          const under = snapshots.get(key);
          if (under !== undefined) r.snapshot = { lsn: lsnToHex(under.lsn), rows: under.rows };
          if (at !== undefined && max !== null) {
            const atTime = await q.lsnTime(at);
            r.lagSeconds = maxTime !== null && atTime !== null ? Math.max(0, Math.round((Date.parse(`${maxTime}Z`) - Date.parse(`${atTime}Z`)) / 1000)) : null;
            r.pendingTransactions = await q.countTransactions(at, max);
            // The reader's rule: it resumes at the next LSN, and only an instance older than the position can have lost changes.
            const check = await resumeCheck(q, own, incrementLsn(at), at);
            if (check.state === 'gap') r.warnings = [`behind retention: changes after ${lsnToHex(at)} were cleaned up (${check.instance.name} now starts at ${lsnToHex(check.min)}); run will stop with ${ErrorCodes.CDC_GAP} unless on_gap is snapshot or skip`];
          }
          resources.push(r);
        }
        if (agent !== 'running') resources.push({ kind: 'sql server agent', name: q.where, state: agent, ...(agent === 'stopped' ? { warnings: [agentStoppedMessage(q.where)] } : {}) });
        return { resources };
      }),

    destroy: (ctx) =>
      withConnection(ctx, 'destroy', async (q) => {
        const task = taskOf(ctx);
        const marks = await q.marks();
        const tables = new Map((await q.sourceTables()).map((t) => [tableKey(t), t]));
        // CDC on the tables first: whether the database's goes depends on the capture instances left.
        const resources = await applySteps(removal(refsOf(ctx.config), (ref) => tableRemoval(q, ref, tables.get(tableKey(ref)), marks.tables.get(tableKey(ref)), task)));
        if (marks.database !== null && marks.database === task) {
          const left = (await q.captureInstances()).length;
          const name = (await q.databaseInfo()).database;
          const step: Step =
            left === 0
              ? { report: { kind: 'cdc database', name, action: 'delete' }, apply: () => q.disableDatabase() }
              : { report: { kind: 'cdc database', name, action: 'exists-unmanaged', warnings: [`${left} capture instance(s) remain: CDC stays on for them`] } };
          resources.push(...(await applySteps([step])));
        }
        if (ctx.config.create_checkpoint_table) {
          const cp = parseTableRef(ctx.config.checkpoint_table);
          if (await q.checkpointTableExists(cp)) {
            if (task !== undefined) await q.deleteCheckpoints(cp, task);
            const step: Step =
              (await q.checkpointRowCount(cp)) > 0
                ? { report: { kind: 'checkpoint table', name: tableKey(cp), action: 'exists-unmanaged', warnings: ['other tasks keep positions in it: left in place (this task\'s rows removed)'] } }
                : { report: { kind: 'checkpoint table', name: tableKey(cp), action: 'delete' }, apply: () => q.dropCheckpointTable(cp) };
            resources.push(...(await applySteps([step])));
          }
        }
        return { resources };
      }),
  };
}

/** The provider dstream ships as the built-in `mssql-cdc` and the `mssql-cdc` executable. */
export const mssqlCdcSource = mssqlCdcProvider();
