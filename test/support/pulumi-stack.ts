/**
 * Stands in for the Pulumi CLI where it is absent, under the engine's real Automation API calls:
 * a stack whose preview/up run dstream's real inline program under `pulumi.runtime.setMocks`,
 * capture every Queue registration with its resource options (as the engine's gRPC monitor
 * would receive them), and step a state as Pulumi's engine does: a declared resource missing
 * from the state is created (or imported, with an import id), one in the state and no longer
 * declared is deleted, or only dropped from the state when its retainOnDelete says so.
 * Tests assert on what dstream declared and what would have happened to the queues.
 */
import * as pulumi from '@pulumi/pulumi';
import type { OpenStack, PulumiStack, StepEvent } from '../../lib/infra/pulumi-engine.js';

export interface Registration {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
  retainOnDelete: boolean;
  importId: string;
  ignoreChanges: string[];
  replaceOnChanges: string[];
}

interface StateResource {
  type: string;
  urn: string;
  id: string;
  inputs: Record<string, unknown>;
  retainOnDelete: boolean;
}

const registrations: Registration[] = [];

/** Installs the mocks once per test file; `subscriptionId` answers getClientConfig. */
export async function installMocks(): Promise<void> {
  await pulumi.runtime.setMocks(
    {
      newResource: (args) => ({ id: args.id || `${args.name}-id`, state: args.inputs }),
      call: (args) => (args.token === 'azure-native:authorization:getClientConfig' ? { subscriptionId: 'sub-0001', tenantId: 't', clientId: 'c', objectId: 'o' } : args.inputs),
    },
    'dstream',
    'test',
    false,
  );
  type Req = {
    getType(): string;
    getName(): string;
    getRetainondelete(): boolean;
    getImportid(): string;
    getIgnorechangesList(): string[];
    getReplaceonchangesList(): string[];
    getObject(): { toJavaScript(): Record<string, unknown> } | undefined;
  };
  const monitor = pulumi.runtime.getMonitor() as unknown as { registerResource(req: Req, cb: unknown): Promise<void> };
  const real = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req, cb) => {
    registrations.push({
      type: req.getType(),
      name: req.getName(),
      inputs: req.getObject()?.toJavaScript() ?? {},
      retainOnDelete: req.getRetainondelete(),
      importId: req.getImportid(),
      ignoreChanges: req.getIgnorechangesList(),
      replaceOnChanges: req.getReplaceonchangesList(),
    });
    return real(req, cb);
  };
}

/** Runs a program under the mocks and returns what it registered. */
export async function runProgram(program: () => Promise<Record<string, unknown>>): Promise<Registration[]> {
  const before = registrations.length;
  const outputs = await program();
  const queues = (outputs.queues ?? []) as pulumi.Output<string>[];
  await new Promise((resolve) => pulumi.all(queues).apply(resolve));
  return registrations.slice(before).filter((r) => r.type !== 'pulumi:pulumi:Stack');
}

export interface FakeStack extends PulumiStack {
  state: StateResource[];
  /** Each operation with what its program registered. */
  ops: Array<{ op: 'preview' | 'up' | 'destroy'; declared: Registration[] }>;
  removed: boolean;
  /** Queues deleted in Azure (a resource dropped with retainOnDelete only leaves the state). */
  deleted: string[];
  opened: Array<Parameters<OpenStack>>;
}

const urnOf = (type: string, name: string) => `urn:pulumi:test::dstream::${type}::${name}`;

export function fakeStack(initial: Array<{ name: string; inputs: Record<string, unknown>; retainOnDelete?: boolean }> = []): FakeStack & { open: OpenStack } {
  const type = 'azure-native:servicebus:Queue';
  const state: StateResource[] = initial.map((r) => ({ type, urn: urnOf(type, r.name), id: `${r.name}-id`, inputs: r.inputs, retainOnDelete: r.retainOnDelete ?? false }));
  const steps = (declared: Registration[]) => {
    const out: Array<{ name: string; op: string; reg?: Registration }> = [];
    for (const d of declared) {
      const had = state.find((s) => s.urn === urnOf(d.type, d.name));
      if (had === undefined) out.push({ name: d.name, op: d.importId ? 'import' : 'create', reg: d });
      else {
        const changed = Object.keys({ ...had.inputs, ...d.inputs }).filter((k) => !d.ignoreChanges.includes(k) && JSON.stringify(had.inputs[k]) !== JSON.stringify(d.inputs[k]));
        out.push({ name: d.name, op: changed.length === 0 ? 'same' : changed.some((k) => d.replaceOnChanges.includes(k)) ? 'replace' : 'update', reg: d });
      }
    }
    for (const s of state) if (!declared.some((d) => urnOf(d.type, d.name) === s.urn)) out.push({ name: s.urn.split('::').pop()!, op: s.retainOnDelete ? 'discard' : 'delete' });
    return out;
  };
  const event = (kind: 'resourcePreEvent' | 'resOutputsEvent', name: string, op: string): StepEvent => ({ [kind]: { metadata: { type, urn: urnOf(type, name), op } } });
  const stack: FakeStack & { open: OpenStack } = {
    state,
    ops: [],
    removed: false,
    deleted: [],
    opened: [],
    open: async (...args) => {
      stack.opened.push(args);
      return stack;
    },
    async exportStack() {
      return { deployment: { resources: state.map((s) => ({ ...s })) } };
    },
    async preview({ program, onEvent }) {
      const declared = await runProgram(program!);
      stack.ops.push({ op: 'preview', declared });
      for (const s of steps(declared)) onEvent?.(event('resourcePreEvent', s.name, s.op));
    },
    async up({ program, onEvent }) {
      const declared = await runProgram(program!);
      stack.ops.push({ op: 'up', declared });
      for (const s of steps(declared)) {
        const i = state.findIndex((r) => r.urn === urnOf(type, s.name));
        if (s.op === 'delete') stack.deleted.push(s.name);
        if (s.op === 'delete' || s.op === 'discard') state.splice(i, 1);
        else if (i === -1) state.push({ type, urn: urnOf(type, s.name), id: s.reg!.importId || `${s.name}-id`, inputs: s.reg!.inputs, retainOnDelete: s.reg!.retainOnDelete });
        else {
          // ignoreChanges takes the old value, or leaves the property out when it had none (as Pulumi's engine does).
          const inputs = { ...s.reg!.inputs };
          for (const k of s.reg!.ignoreChanges) {
            if (k in state[i]!.inputs) inputs[k] = state[i]!.inputs[k];
            else delete inputs[k];
          }
          state[i] = { ...state[i]!, inputs, retainOnDelete: s.reg!.retainOnDelete };
        }
        onEvent?.(event('resOutputsEvent', s.name, s.op));
      }
    },
    async destroy({ onEvent }) {
      stack.ops.push({ op: 'destroy', declared: [] });
      for (const s of [...state]) {
        if (!s.retainOnDelete) stack.deleted.push(s.urn.split('::').pop()!);
        onEvent?.(event('resOutputsEvent', s.urn.split('::').pop()!, s.retainOnDelete ? 'discard' : 'delete'));
      }
      state.length = 0;
    },
    workspace: {
      async removeStack() {
        stack.removed = true;
      },
    },
  };
  return stack;
}
