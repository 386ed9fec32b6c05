/**
 * The embedded Pulumi engine, driven by the Automation API: plan = preview, init = up, status =
 * stack outputs and resources, destroy = destroy then remove the stack. One stack per task, state
 * in a local file backend under the dstream state directory unless a backend URL is given.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DstreamError, ErrorCodes, messageOf } from '../errors.js';
import { defaultStateDir } from '../executor/state-store.js';
import type { ResourceReport } from '../protocol/messages.js';
import type { ServiceBusAdministrationClient } from '@azure/service-bus';
import { addRuntimeCounts, summarize, type InfraResult } from './admin-engine.js';
import type { DesiredQueue } from './desired.js';
import type { InfrastructureEngine } from './engine.js';
import { queueProgram, type AzureTarget } from './pulumi-program.js';

export interface PulumiEngineOptions extends AzureTarget {
  task: string;
  /** `file://...`, `azblob://...`, `https://api.pulumi.com`. Default: file backend under stateDir. */
  backendUrl?: string;
  /** Default `$DSTREAM_STATE_DIR` or `~/.dstream`. */
  stateDir?: string;
  /** Secrets passphrase for the stack; default `PULUMI_CONFIG_PASSPHRASE`, else empty (no secrets are stored). */
  passphrase?: string;
  env?: Record<string, string | undefined>;
  /** With a connection string at hand: live message counts in status. */
  admin?: ServiceBusAdministrationClient;
  /** Namespace host, for messages. */
  endpoint?: string;
}


const INSTALL = 'install the Pulumi CLI (https://www.pulumi.com/docs/iac/download-install/) and put it on PATH, or use provisioner = "sdk" with a connection string that has Manage rights';

/** Turns Automation API failures into messages a person can act on. */
export function explainPulumi(err: unknown, what: string): DstreamError {
  const text = messageOf(err);
  let hint: string;
  if (/ENOENT|not found|command not found|Could not find the pulumi/i.test(text) && /pulumi/i.test(text)) hint = `the Pulumi CLI was not found: ${INSTALL}`;
  else if (/no resource plugin|plugin.*azure-native/i.test(text)) hint = 'the azure-native plugin is missing: run `pulumi plugin install resource azure-native` (needs network)';
  else if (/credential|az login|authoriz|subscription/i.test(text)) hint = 'Azure credentials are missing or refused: sign in with `az login`, or set ARM_CLIENT_ID, ARM_CLIENT_SECRET, ARM_TENANT_ID and ARM_SUBSCRIPTION_ID';
  else hint = text.split('\n').find((l) => /error/i.test(l))?.trim() ?? text.split('\n')[0] ?? text;
  return new DstreamError(ErrorCodes.PROVISIONER, `pulumi ${what} failed: ${hint}`, { cause: err });
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

export class PulumiEngine implements InfrastructureEngine {
  constructor(private readonly options: PulumiEngineOptions) {}

  private async stack(desired: DesiredQueue[]) {
    const { LocalWorkspace } = await loadPulumi();
    const env = this.options.env ?? process.env;
    const stateDir = this.options.stateDir ?? defaultStateDir(env);
    const backend = this.options.backendUrl ?? `file://${join(stateDir, 'pulumi')}`;
    if (backend.startsWith('file://')) await mkdir(backend.slice('file://'.length), { recursive: true });
    const envVars: Record<string, string> = {
      PULUMI_BACKEND_URL: backend,
      PULUMI_CONFIG_PASSPHRASE: this.options.passphrase ?? env.PULUMI_CONFIG_PASSPHRASE ?? '',
      PULUMI_SKIP_UPDATE_CHECK: 'true',
    };
    return LocalWorkspace.createOrSelectStack(
      { projectName: 'dstream', stackName: this.options.task, program: queueProgram(desired, this.options) },
      { envVars, projectSettings: { name: 'dstream', runtime: 'nodejs', backend: { url: backend } } },
    );
  }

  private async run<T>(what: string, op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      throw explainPulumi(err, what);
    }
  }

  async plan(desired: DesiredQueue[]): Promise<InfraResult> {
    return this.run('preview', async () => {
      const stack = await this.stack(desired);
      const { resources, onEvent } = queueEvents('resourcePreEvent');
      await stack.preview({ onEvent });
      return { resources, summary: summarize(resources) };
    });
  }

  async init(desired: DesiredQueue[]): Promise<InfraResult> {
    return this.run('up', async () => {
      const stack = await this.stack(desired);
      const { resources, onEvent } = queueEvents('resOutputsEvent');
      await stack.up({ onEvent });
      return { resources, summary: summarize(resources, true) };
    });
  }

  async status(desired: DesiredQueue[]): Promise<InfraResult> {
    return this.run('status', async () => {
      const stack = await this.stack(desired);
      const state = await stack.exportStack();
      const live = new Set(((state.deployment as { resources?: Array<{ type: string; urn: string }> }).resources ?? []).filter((r) => r.type === 'azure-native:servicebus:Queue').map((r) => r.urn.split('::').pop()!));
      const resources: ResourceReport[] = desired.map((d) => ({ kind: 'queue', name: d.name, exists: live.has(d.name), managed: live.has(d.name) }));
      if (this.options.admin !== undefined) await addRuntimeCounts(this.options.admin, resources, { endpoint: this.options.endpoint ?? this.options.namespaceName });
      const missing = resources.filter((r) => !r.exists).length;
      return { resources, summary: `${resources.length - missing} of ${resources.length} queues in stack "${this.options.task}"${missing > 0 ? `; ${missing} missing: run init` : ''}` };
    });
  }

  async destroy(): Promise<InfraResult> {
    return this.run('destroy', async () => {
      const stack = await this.stack([]);
      const resources: ResourceReport[] = [];
      await stack.destroy({
        onEvent: (e) => {
          const m = e.resOutputsEvent?.metadata ?? e.resourcePreEvent?.metadata;
          if (m?.type === 'azure-native:servicebus:Queue' && e.resOutputsEvent) resources.push({ kind: 'queue', name: m.urn.split('::').pop()!, action: 'delete' });
        },
      });
      await stack.workspace.removeStack(this.options.task);
      return { resources, summary: `${resources.length} destroyed; stack "${this.options.task}" removed` };
    });
  }
}

/** Collects the queues an operation touches from its engine events: planned (pre) or done (outputs). */
function queueEvents(kind: 'resourcePreEvent' | 'resOutputsEvent') {
  const resources: ResourceReport[] = [];
  const onEvent = (e: { resourcePreEvent?: { metadata: StepMeta }; resOutputsEvent?: { metadata: StepMeta } }) => {
    const m = e[kind]?.metadata;
    if (m === undefined || m.type !== 'azure-native:servicebus:Queue') return;
    resources.push({ kind: 'queue', name: m.urn.split('::').pop()!, action: opToAction(m.op) });
  };
  return { resources, onEvent };
}

interface StepMeta {
  type: string;
  urn: string;
  op: string;
}

function opToAction(op: string): ResourceReport['action'] {
  if (op === 'create') return 'create';
  if (op === 'delete' || op === 'discard') return 'delete';
  if (op === 'same') return 'unchanged';
  return 'update';
}
