/** Terraform-like text for lifecycle reports (the --json form is the report itself). */
import type { LifecycleReport } from '../executor/executor.js';
import type { StoredState } from '../executor/state-store.js';
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

function resourceLine(r: ResourceReport): string {
  if (r.action !== undefined) {
    const changes = Array.isArray(r.changes) ? ` (${(r.changes as string[]).join(', ')})` : '';
    const lines = [`  ${MARK[r.action] ?? r.action} ${r.kind} ${r.name}${changes}`];
    for (const w of (r.warnings as string[] | undefined) ?? []) lines.push(`      warning: ${w}`);
    return lines.join('\n');
  }
  if (r.exists === false) return `  x ${r.kind} ${r.name}: missing`;
  const facts = Object.entries(r)
    .filter(([k]) => !['kind', 'name', 'exists', 'table', 'warnings'].includes(k))
    .map(([k, v]) => `${k} ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`);
  const lines = [`  ok ${r.kind} ${r.name}${facts.length ? `  (${facts.join(', ')})` : ''}`];
  for (const w of (r.warnings as string[] | undefined) ?? []) lines.push(`      warning: ${w}`);
  return lines.join('\n');
}

function section(title: string, result: ResultLine): string[] {
  const resources = (result.resources ?? []) as ResourceReport[];
  return [title, ...resources.map(resourceLine), ...(typeof result.summary === 'string' ? [result.summary] : [])];
}

export function formatReport(report: LifecycleReport, state?: StoredState, now = Date.now()): string {
  const lines = [`Task ${report.task}: ${report.streams.length} stream${report.streams.length === 1 ? '' : 's'} (${report.streams.map((s) => s.name).join(', ')})`];
  if (report.input !== undefined && ((report.input.resources as unknown[] | undefined)?.length ?? 0) > 0) lines.push('', ...section('Input:', report.input));
  lines.push('', ...section(report.input !== undefined ? 'Output:' : `${report.command}:`, report.output));
  if (report.command === 'status') {
    lines.push('', state === undefined ? 'Position: none stored yet (run starts where the input starts)' : `Position: ${JSON.stringify(state.position)}, saved ${age(now - Date.parse(state.savedAt))} ago`);
  }
  return `${lines.join('\n')}\n`;
}

export function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}
