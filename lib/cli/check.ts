/**
 * What `validate` proves about a task before any verb runs it, and every verb checks the same way
 * (exit 2, file:line:column): the provider exists (built in, with a did-you-mean; or an executable
 * file), and a built-in provider's config matches its schema, each problem at its attribute.
 * Then relative paths in a built-in's config are resolved against the task file's directory.
 */
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { relative, resolve } from 'node:path';
import { configError, type Position, type ProviderRef, type TaskConfig } from '../config/tasks.js';
import { didYouMean, type ConfigSchema } from '../config/schema.js';
import { validateProviderConfig, type ProviderDefinition } from '../provider/run-provider.js';
import { DstreamError, isDstreamError } from '../errors.js';
import { builtinNamed, type BuiltinProvider } from '../providers/builtins.js';

type Builtins = Record<string, BuiltinProvider>;

export async function checkTask(task: TaskConfig, builtins: Builtins, env: Record<string, string | undefined>): Promise<void> {
  for (const side of ['input', 'output'] as const) {
    const ref = task[side];
    const at = (key: string): Position => ref.at?.[key] ?? { line: ref.line ?? task.line, column: 1 };
    if (ref.provider !== undefined) {
      const def = await builtinNamed(builtins, ref.provider);
      if (def === undefined) {
        const names = Object.keys(builtins);
        const guess = didYouMean(ref.provider, names);
        throw configError(
          task.file,
          at('provider'),
          `task "${task.name}" ${side}: no built-in provider "${ref.provider}"${guess ? `; did you mean "${guess}"?` : ''} (built in: ${names.join(', ')}; or provider_path = "<executable>")`,
        );
      }
      checkConfig(task, side, ref, def, env, at);
      resolvePaths(ref, def.config ?? {}, task.dir ?? process.cwd());
    } else if (ref.providerPath !== undefined) {
      await checkExecutable(task, side, ref.providerPath, at('provider_path'));
    }
  }
}

function checkConfig(task: TaskConfig, side: string, ref: ProviderRef, def: ProviderDefinition<never>, env: Record<string, string | undefined>, at: (key: string) => Position): void {
  try {
    validateProviderConfig(def, ref.config, { path: `task "${task.name}" ${side}.config`, env });
  } catch (err) {
    if (!isDstreamError(err)) throw err;
    const fields = (err.details.fields as Array<{ key: string; message: string }> | undefined) ?? [];
    if (fields.length === 0) throw configError(task.file, at('config'), err.message, err);
    // Each problem at its attribute (a required key that is missing: at the config block).
    const lines = fields.map((f) => {
      const p = ref.at?.[`config.${f.key}`] ?? at('config');
      return `${task.file}:${p.line}:${p.column}: ${f.message}`;
    });
    const first = ref.at?.[`config.${fields[0]!.key}`] ?? at('config');
    throw new DstreamError(err.code, lines.join('\n'), { cause: err, details: { file: task.file, ...first, problems: lines } });
  }
}

async function checkExecutable(task: TaskConfig, side: string, path: string, at: Position): Promise<void> {
  const shown = relative(process.cwd(), path) || path;
  const info = await stat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
    throw err;
  });
  if (info === undefined) throw configError(task.file, at, `task "${task.name}" ${side}: provider_path ${shown} does not exist (relative paths are taken from the task file's directory)`);
  if (!info.isFile()) throw configError(task.file, at, `task "${task.name}" ${side}: provider_path ${shown} is not a file`);
  // .js/.mjs/.cjs files run with node and need only be readable.
  const mode = /\.(m?js|cjs)$/.test(path) ? constants.R_OK : constants.X_OK;
  const ok = await access(path, mode).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'EACCES' || err.code === 'EPERM') return false;
      throw err;
    },
  );
  if (!ok) {
    throw configError(task.file, at, mode === constants.X_OK ? `task "${task.name}" ${side}: provider_path ${shown} is not executable (chmod +x ${shown})` : `task "${task.name}" ${side}: provider_path ${shown} cannot be read`);
  }
}

/** A built-in's file and directory settings, relative to the task file (as provider_path is). */
function resolvePaths(ref: ProviderRef, schema: ConfigSchema, dir: string): void {
  for (const [key, field] of Object.entries(schema)) {
    if (!field.path) continue;
    const v = ref.config[key] ?? field.default;
    if (typeof v === 'string' && v !== '') ref.config[key] = resolve(dir, v);
  }
}
