/** Terraform-like text for lifecycle reports (the --json form is the report itself), in units people read. */
import type { LifecycleReport } from '../executor/executor.js';
import type { StoredState } from '../state/state-store.js';
import type { ResourceReport, ResultLine } from '../protocol/messages.js';

const MARK: Record<string, string> = {
  create: '+ create',
  update: '~ update',
  replace: '-/+ replace',
  delete: '- destroy',
  unchanged: '= unchanged',
  exists: '= exists',
  'exists-unmanaged': '! not managed by this task:',
  blocked: 'x blocked:',
};

export interface Colors {
  green(s: string): string;
  yellow(s: string): string;
  red(s: string): string;
}

const plain: Colors = { green: (s) => s, yellow: (s) => s, red: (s) => s };
const ansi = (n: number) => (s: string) => `\x1b[${n}m${s}\x1b[0m`;
const tty: Colors = { green: ansi(32), yellow: ansi(33), red: ansi(31) };

/** Colour only on a terminal, and never with NO_COLOR set (https://no-color.org) or TERM=dumb. */
export function colorsFor(stream: { isTTY?: boolean }, env: Record<string, string | undefined>): Colors {
  return stream.isTTY === true && (env.NO_COLOR === undefined || env.NO_COLOR === '') && env.TERM !== 'dumb' ? tty : plain;
}

const COLOR_OF: Record<string, keyof Colors> = { create: 'green', update: 'yellow', delete: 'red', 'exists-unmanaged': 'yellow', blocked: 'red' };

/** 98821 -> `96.5 KiB`. */
export function humanBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = -1;
  do {
    v /= 1024;
    i++;
  } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** `lagSeconds 3725` -> `lag 1h 2m`. */
export function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

const words = (key: string) => key.replace(/([a-z0-9])([A-Z])/g, '$1 $2').toLowerCase();

/** A resource's facts (counts, sizes, positions) as `size 96.5 KiB`, `active messages 3`, `lag 2s`. */
export function resourceFacts(r: ResourceReport): string[] {
  return Object.entries(r)
    .filter(([k]) => !['kind', 'name', 'exists', 'table', 'warnings', 'action', 'changes'].includes(k))
    .map(([k, v]) => {
      if (typeof v === 'number' && /InBytes$/.test(k)) return `${words(k.replace(/InBytes$/, ''))} ${humanBytes(v)}`;
      if (typeof v === 'number' && /Seconds$/.test(k)) return `${words(k.replace(/Seconds$/, ''))} ${age(v * 1000)}`;
      if (v === true) return words(k);
      if (v === false) return `not ${words(k)}`;
      return `${words(k)} ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`;
    });
}

function resourceLine(r: ResourceReport, c: Colors): string {
  const warnings = ((r.warnings as string[] | undefined) ?? []).map((w) => `      ${c.yellow('warning:')} ${w}`);
  if (r.action !== undefined) {
    const changes = Array.isArray(r.changes) ? ` (${(r.changes as string[]).join(', ')})` : '';
    const mark = MARK[r.action] ?? r.action;
    const color = COLOR_OF[r.action];
    return [`  ${color ? c[color](mark) : mark} ${r.kind} ${r.name}${changes}`, ...warnings].join('\n');
  }
  if (r.exists === false) return [`  ${c.red('x')} ${r.kind} ${r.name}: missing`, ...warnings].join('\n');
  const facts = resourceFacts(r);
  return [`  ${c.green('ok')} ${r.kind} ${r.name}${facts.length ? `  (${facts.join(', ')})` : ''}`, ...warnings].join('\n');
}

function section(title: string, result: ResultLine, c: Colors): string[] {
  const resources = (result.resources ?? []) as ResourceReport[];
  const failed = result.status === 'error' ? [`  ${c.red('error:')} ${result.message ?? 'no message'}`] : [];
  return [title, ...failed, ...resources.map((r) => resourceLine(r, c)), ...(typeof result.summary === 'string' ? [result.summary] : [])];
}

/** Whether a plan would change anything (plan --detailed-exitcode). */
export function hasChanges(report: LifecycleReport): boolean {
  return [report.input, report.output].some((side) => ((side?.resources ?? []) as ResourceReport[]).some((r) => r.action === 'create' || r.action === 'update' || r.action === 'delete'));
}

export function formatReport(report: LifecycleReport, state?: StoredState, options: { now?: number; colors?: Colors } = {}): string {
  const c = options.colors ?? plain;
  const now = options.now ?? Date.now();
  const lines = [`Task ${report.task}: ${report.streams.length} stream${report.streams.length === 1 ? '' : 's'} (${report.streams.map((s) => s.name).join(', ')})`];
  for (const w of report.warnings ?? []) lines.push(`  ${c.yellow('warning:')} ${w}`);
  if (report.input !== undefined && (report.input.status === 'error' || ((report.input.resources as unknown[] | undefined)?.length ?? 0) > 0)) lines.push('', ...section('Input:', report.input, c));
  lines.push('', ...section(report.input !== undefined ? 'Output:' : `${report.command}:`, report.output, c));
  if (report.command === 'status') {
    lines.push('', state === undefined ? 'Position: none stored yet (run starts where the input starts)' : `Position: ${JSON.stringify(state.position)}, saved ${age(now - Date.parse(state.savedAt))} ago`);
  }
  return `${lines.join('\n')}\n`;
}
