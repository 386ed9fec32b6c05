/**
 * The embedded Pulumi engine, driven by the Automation API: plan = preview, init = up, status =
 * the stack's queues, destroy = release the empty queues and remove them. One stack per task,
 * state in a local file backend under the dstream state directory unless a backend URL is given.
 * What each operation declares is decided in pulumi-plan.ts; this file only runs it.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { ServiceBusAdministrationClient } from '@azure/service-bus';
import { DstreamError, ErrorCodes, isDstreamError, messageOf } from '../errors.js';
import { defaultStateDir } from '../state/state-store.js';
import type { ResourceReport } from '../protocol/messages.js';
import { addRuntimeCounts, listQueues, summarize } from './admin-engine.js';
import type { DesiredQueue } from './desired.js';
import type { InfraResult, InfrastructureEngine } from './engine.js';
import { queueWarnings } from './queue-checks.js';
import { checkStackName, destroyPlan, programPlan, QUEUE_TYPE, type AzureTarget, type LiveQueue, type StackQueue } from './pulumi-plan.js';
import { queueProgram } from './pulumi-program.js';

export interface PulumiEngineOptions extends AzureTarget {
  task: string;
  /** `file://...`, `azblob://...`, `https://api.pulumi.com`. Default: file backend under stateDir. */
  backendUrl?: string;
  /** Default `$DSTREAM_STATE_DIR` or `~/.dstream`. */
  stateDir?: string;
  /** Secrets passphrase for the stack; default: the user's PULUMI_CONFIG_PASSPHRASE or _FILE, else empty. */
  passphrase?: string;
  env?: Record<string, string | undefined>;
  /** With a connection at hand: queues outside the stack are seen, live counts in status, destroy checks for messages. */
  admin?: ServiceBusAdministrationClient;
  /** Namespace host, for messages. */
  endpoint?: string;
  /** destroy deletes queues that still hold messages. */
  forceDestroy?: boolean;
  /** Opens the stack; default LocalWorkspace.createOrSelectStack (needs the Pulumi CLI). */
  openStack?: OpenStack;
}

/** An engine event, as far as dstream reads it. */
export interface StepEvent {
  resourcePreEvent?: { metadata: StepMeta };
  resOutputsEvent?: { metadata: StepMeta };
}
interface StepMeta {
  type: string;
  urn: string;
  op: string;
}
type Program = () => Promise<Record<string, unknown>>;
interface Run {
  program?: Program;
  onEvent?: (e: StepEvent) => void;
}

/** The part of an Automation API Stack the engine uses. */
export interface PulumiStack {
  preview(options: Run): Promise<unknown>;
  up(options: Run): Promise<unknown>;
  destroy(options: Run): Promise<unknown>;
  exportStack(): Promise<{ deployment: unknown }>;
  workspace: { removeStack(name: string): Promise<void> };
}
export type OpenStack = (
  args: { projectName: string; stackName: string; program: Program },
  options: { envVars: Record<string, string>; projectSettings: { name: string; runtime: 'nodejs'; backend: { url: string } } },
) => Promise<PulumiStack>;

const INSTALL = 'install the Pulumi CLI (https://www.pulumi.com/docs/iac/download-install/) and put it on PATH, or use provisioner = "sdk" with a connection string that has Manage rights';

/** Turns Automation API failures into messages a person can act on. */
export function explainPulumi(err: unknown, what: string): DstreamError {
  if (isDstreamError(err)) return err;
  const text = messageOf(err);
  let hint: string;
  if (/ENOENT|not found|command not found|Could not find the pulumi/i.test(text) && /pulumi/i.test(text)) hint = `the Pulumi CLI was not found: ${INSTALL}`;
  else if (/no resource plugin|plugin.*azure-native/i.test(text)) hint = 'the azure-native plugin is missing: run `pulumi plugin install resource azure-native` (needs network)';
  else if (/already exist/i.test(text)) hint = 'a queue exists already outside the stack: give connection_string (or namespace) so that dstream sees it and init adopts it if it is this task\'s, or remove it, or use another template';
  else if (/passphrase/i.test(text)) hint = 'the stack\'s secrets passphrase is wrong or missing: set PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE to the one the stack was made with';
  else if (/credential|az login|authoriz|subscription/i.test(text)) hint = 'Azure credentials are missing or refused: sign in with `az login`, or set ARM_CLIENT_ID, ARM_CLIENT_SECRET, ARM_TENANT_ID and ARM_SUBSCRIPTION_ID';
  else hint = text.split('\n').find((l) => /error/i.test(l))?.trim() ?? text.split('\n')[0] ?? text;
  return new DstreamError(ErrorCodes.PROVISIONER, `pulumi ${what} failed: ${hint}`, { cause: err });
}

/**
 * The environment the Pulumi CLI runs with. The passphrase is set only when the user set neither
 * PULUMI_CONFIG_PASSPHRASE nor PULUMI_CONFIG_PASSPHRASE_FILE (a set variable wins over the file,
 * which would break a stack made with a real passphrase).
 */
export function pulumiEnv(env: Record<string, string | undefined>, backend: string, passphrase?: string): Record<string, string> {
  const vars: Record<string, string> = { PULUMI_BACKEND_URL: backend, PULUMI_SKIP_UPDATE_CHECK: 'true' };
  if (passphrase !== undefined) vars.PULUMI_CONFIG_PASSPHRASE = passphrase;
  else if (env.PULUMI_CONFIG_PASSPHRASE !== undefined) vars.PULUMI_CONFIG_PASSPHRASE = env.PULUMI_CONFIG_PASSPHRASE;
  else if (env.PULUMI_CONFIG_PASSPHRASE_FILE !== undefined) vars.PULUMI_CONFIG_PASSPHRASE_FILE = env.PULUMI_CONFIG_PASSPHRASE_FILE;
  else vars.PULUMI_CONFIG_PASSPHRASE = '';
  return vars;
}

/**
 * Pulumi is an optional peer dependency (about 195 MB installed, three quarters of dstream's
 * tree): only tasks that provision with it need it, and they need the pulumi CLI anyway.
 */
async function loadPulumi(): Promise<typeof import('@pulumi/pulumi/automation/index.js')> {
  try {
    import.meta.resolve('@pulumi/azure-native/servicebus/index.js');
    return await import('@pulumi/pulumi/automation/index.js');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw err;
    throw new DstreamError(
      ErrorCodes.PROVISIONER,
      'provisioner "pulumi" needs the Pulumi packages beside dstream: npm install @pulumi/pulumi@3 @pulumi/azure-native@3 (and the pulumi CLI on PATH); or use provisioner = "sdk" with a connection string that has Manage rights',
      { cause: err },
    );
  }
}

const createOrSelectStack: OpenStack = async (args, options) => {
  const { LocalWorkspace } = await loadPulumi();
  return LocalWorkspace.createOrSelectStack(args, options) as unknown as Promise<PulumiStack>;
};

/** The queues a stack's state holds. */
export function stackQueues(deployment: unknown): StackQueue[] {
  const resources = (deployment as { resources?: Array<{ type: string; urn: string; id?: string; inputs?: Record<string, unknown>; delete?: boolean }> } | undefined)?.resources ?? [];
  return resources.filter((r) => r.type === QUEUE_TYPE && r.delete !== true).map((r) => ({ name: r.urn.split('::').pop()!, id: r.id, inputs: r.inputs ?? {} }));
}

export class PulumiEngine implements InfrastructureEngine {
  private readonly task: string;

  constructor(private readonly options: PulumiEngineOptions) {
    this.task = checkStackName(options.task);
  }

  private get endpoint(): string {
    return this.options.endpoint ?? this.options.namespaceName;
  }

  private async stack(): Promise<PulumiStack> {

    const env = this.options.env ?? process.env;
    const stateDir = this.options.stateDir ?? defaultStateDir(env);
    const backend = this.options.backendUrl ?? `file://${join(stateDir, 'pulumi')}`;
    if (backend.startsWith('file://')) await mkdir(backend.slice('file://'.length), { recursive: true });
    const open = this.options.openStack ?? createOrSelectStack;
    return open(
      { projectName: 'dstream', stackName: this.task, program: queueProgram([], this.options) },
      { envVars: pulumiEnv(env, backend, this.options.passphrase), projectSettings: { name: 'dstream', runtime: 'nodejs', backend: { url: backend } } },
    );
  }

  private async run<T>(what: string, op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      throw explainPulumi(err, what);
    }
  }

  /** The namespace's queues, when a connection is at hand. */
  private async live(): Promise<Map<string, LiveQueue> | undefined> {
    if (this.options.admin === undefined) return undefined;
    const found = await listQueues(this.options.admin, { endpoint: this.endpoint });
    return new Map([...found].map(([k, q]) => [k, { name: q.name, userMetadata: q.userMetadata, settings: q }]));
  }

  async plan(desired: DesiredQueue[]): Promise<InfraResult> {
    const live = await this.live();
    return this.run('preview', async () => {
      const stack = await this.stack();
      const planned = programPlan('plan', desired, stackQueues((await stack.exportStack()).deployment), live, this.options, this.task);
      const onEvent = actionsFrom('resourcePreEvent', planned.reports);
      await stack.preview({ program: queueProgram(planned.declarations, this.options), onEvent });
      return { resources: planned.reports, summary: summarize(planned.reports) };
    });
  }

  async init(desired: DesiredQueue[]): Promise<InfraResult> {
    const live = await this.live();
    return this.run('up', async () => {
      const stack = await this.stack();
      let planned = programPlan('init', desired, stackQueues((await stack.exportStack()).deployment), live, this.options, this.task);
      const reports = planned.reports;
      if (planned.declarations.some((d) => d.adopt === true)) {
        // The import takes each queue as it is; the second up gives it the task's settings and mark.
        await stack.up({ program: queueProgram(planned.declarations, this.options) });
        planned = programPlan('init', desired, stackQueues((await stack.exportStack()).deployment), live, this.options, this.task);
      }
      await stack.up({ program: queueProgram(planned.declarations, this.options), onEvent: actionsFrom('resOutputsEvent', reports) });
      return { resources: reports, summary: summarize(reports, true) };
    });
  }

  async status(desired: DesiredQueue[]): Promise<InfraResult> {
    const live = await this.live();
    return this.run('status', async () => {
      const stack = await this.stack();
      const inStack = new Set(stackQueues((await stack.exportStack()).deployment).map((s) => s.name.toLowerCase()));
      const resources: ResourceReport[] = desired.map((d) => {
        const key = d.name.toLowerCase();
        const r: ResourceReport = { kind: 'queue', name: d.name, exists: live === undefined ? inStack.has(key) : live.has(key), managed: inStack.has(key) };
        const q = live?.get(key);
        const warnings = q === undefined ? [] : queueWarnings(q.settings);
        if (warnings.length > 0) r.warnings = warnings;
        return r;
      });
      if (this.options.admin !== undefined) await addRuntimeCounts(this.options.admin, resources, { endpoint: this.endpoint });
      const missing = resources.filter((r) => !r.exists).length;
      return { resources, summary: `${resources.length - missing} of ${resources.length} queues exist; ${resources.filter((r) => r.managed).length} in stack "${this.task}"${missing > 0 ? `; ${missing} missing: run init` : ''}` };
    });
  }

  async destroy(): Promise<InfraResult> {
    return this.run('destroy', async () => {
      const stack = await this.stack();
      const queues = stackQueues((await stack.exportStack()).deployment);
      const messages = new Map<string, number>();
      if (this.options.admin !== undefined) {
        const counted: ResourceReport[] = queues.map((q) => ({ kind: 'queue', name: String(q.inputs.queueName ?? q.name), exists: true }));
        await addRuntimeCounts(this.options.admin, counted, { endpoint: this.endpoint });
        counted.forEach((c, i) => messages.set(queues[i]!.name.toLowerCase(), Number(c.totalMessages ?? 0)));
      }
      const planned = destroyPlan(queues, messages, this.options.forceDestroy === true);
      const deleting = planned.keep.length < queues.length;
      // retainOnDelete is read from the state when a resource goes: turn it off first for the queues to delete.
      if (deleting) await stack.up({ program: queueProgram(planned.release, this.options) });
      if (planned.keep.length === 0) {
        await stack.destroy({});
        await stack.workspace.removeStack(this.task);
      } else if (deleting) await stack.up({ program: queueProgram(planned.keep, this.options) });
      const kept = planned.keep.length;
      return { resources: planned.reports, summary: `${queues.length - kept} destroyed${kept > 0 ? `; ${kept} kept (they hold messages): stack "${this.task}" stays` : `; stack "${this.task}" removed`}` };
    });
  }
}

/** Fills in the action of each reported queue from the engine's step events: planned (pre) or done (outputs). */
function actionsFrom(kind: 'resourcePreEvent' | 'resOutputsEvent', reports: ResourceReport[]): (e: StepEvent) => void {
  return (e) => {
    const m = e[kind]?.metadata;
    if (m === undefined || m.type !== QUEUE_TYPE) return;
    const name = m.urn.split('::').pop()!;
    const r = reports.find((x) => x.name.toLowerCase() === name.toLowerCase());
    if (r === undefined) reports.push({ kind: 'queue', name, action: opToAction(m.op) });
    else if (r.action !== 'exists-unmanaged') r.action = opToAction(m.op);
  };
}

function opToAction(op: string): ResourceReport['action'] {
  if (op === 'create' || op === 'import') return op === 'create' ? 'create' : 'exists';
  if (op === 'delete' || op === 'discard') return 'delete';
  if (op === 'replace' || op === 'create-replacement' || op === 'delete-replaced') return 'replace';
  if (op === 'same' || op === 'read') return 'unchanged';
  return 'update';
}
