/** The built-in `files` output provider: one NDJSON file per destination, the embedded default. */
import { mkdir, open, readdir, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { ProviderContext, ProviderDefinition } from '../provider/run-provider.js';
import type { ResourceReport } from '../protocol/messages.js';
import { DEFAULT_TEMPLATE, planDestinations } from '../streams/destination.js';
import { tableRefOf } from '../infra/desired.js';
import { summarize } from '../infra/admin-engine.js';
import { applySteps, diff, removal, type Step } from '../infra/reconcile.js';
import { toFiles } from '../sinks/deliver.js';

export interface FilesConfig {
  dir: string;
  template: string;
  no_sync: boolean;
}

function files(ctx: ProviderContext<FilesConfig>): Array<{ name: string; path: string }> {
  const dir = resolve(ctx.config.dir);
  return planDestinations((ctx.header.streams ?? []).map(tableRefOf), ctx.config.template).map((a) => ({ name: a.destination, path: join(dir, `${a.destination}.ndjson`) }));
}

async function exists(path: string): Promise<{ size: number } | undefined> {
  return stat(path).then((s) => ({ size: s.size }), (err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
}

/** The task's files that are there. */
async function present(wanted: Array<{ path: string }>): Promise<Array<{ path: string; size: number }>> {
  const found: Array<{ path: string; size: number }> = [];
  for (const f of wanted) {
    const s = await exists(f.path);
    if (s !== undefined) found.push({ path: f.path, size: s.size });
  }
  return found;
}

/** The steps from the files there to the task's: an empty file for each one missing. */
async function steps(ctx: ProviderContext<FilesConfig>): Promise<Step[]> {
  const wanted = files(ctx);
  return diff(wanted, await present(wanted), {
    key: (f) => f.path,
    actualKey: (f) => f.path,
    decide: (f, there) =>
      there !== undefined
        ? { report: { kind: 'file', name: f.path, action: 'unchanged' } }
        : { report: { kind: 'file', name: f.path, action: 'create' }, apply: async () => (await open(f.path, 'a')).close() },
  });
}

export const filesProvider: ProviderDefinition<FilesConfig> = {
  name: 'files',
  description: 'Writes each destination to <dir>/<destination>.ndjson, fsynced before checkpoints are acknowledged.',
  config: {
    dir: { type: 'string', default: 'out', path: true, description: 'directory of the files' },
    template: { type: 'string', default: DEFAULT_TEMPLATE, description: 'file name of envelopes without metadata.Destination' },
    no_sync: { type: 'boolean', default: false, description: 'skip fsync (faster, not crash-safe)' },
  },
  async run(ctx) {
    const out = toFiles({
      dir: ctx.config.dir,
      template: ctx.config.template,
      noSync: ctx.config.no_sync,
      onCheckpoint: (cp) => void ctx.output.write(cp),
      onSink: (_d, sink) => sink.on('repaired', (r: { path: string; cutBytes: number }) => ctx.log(`${r.path} ended in a torn line (a write cut short): cut its last ${r.cutBytes} bytes before appending; the rows after the stored position are delivered again`)),
    });
    await pipeline(ctx.input, out);
  },
  async plan(ctx) {
    const resources = (await steps(ctx)).map((s) => s.report);
    return { resources, summary: summarize(resources) };
  },
  async init(ctx) {
    await mkdir(resolve(ctx.config.dir), { recursive: true });
    const resources = await applySteps(await steps(ctx));
    return { resources, summary: summarize(resources, true) };
  },
  async status(ctx) {
    const resources: ResourceReport[] = [];
    for (const f of files(ctx)) {
      const s = await exists(f.path);
      resources.push({ kind: 'file', name: f.path, exists: s !== undefined, ...(s ? { sizeInBytes: s.size } : {}) });
    }
    const present = resources.filter((r) => r.exists).length;
    return { resources, summary: `${present} of ${resources.length} files written` };
  },
  async destroy(ctx) {
    const removed = removal(await present(files(ctx)), (f): Step => ({ report: { kind: 'file', name: f.path, action: 'delete' }, apply: () => rm(f.path) }));
    const resources = await applySteps(removed);
    const dir = resolve(ctx.config.dir);
    const left = await readdir(dir).catch(() => [] as string[]);
    return { resources, summary: `${resources.length} destroyed${left.length > 0 ? `; ${left.length} other file(s) left in ${dir}` : ''}` };
  },
};
