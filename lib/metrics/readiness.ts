/**
 * Readiness: each part of a process (source, sink, a provider) says whether it can do its work
 * now, and why not. `/readyz` answers 200 only when every part is ready, with the reasons in the
 * body otherwise. No Prometheus here: a provider keeps its readiness whether or not metrics are on.
 */
import { EventEmitter } from 'node:events';

export interface PartState {
  ready: boolean;
  /** Why not ready (or a note when ready, such as "standby"). Never a secret. */
  reason?: string;
}

export interface ReadinessReport {
  ready: boolean;
  parts: Record<string, PartState>;
}

export class Readiness extends EventEmitter {
  private readonly parts = new Map<string, PartState>();

  /** Sets one part's state; emits 'change' when it differs from what it was. */
  set(part: string, ready: boolean, reason?: string): void {
    const was = this.parts.get(part);
    if (was !== undefined && was.ready === ready && was.reason === reason) return;
    this.parts.set(part, reason === undefined ? { ready } : { ready, reason });
    this.emit('change');
  }

  /** Removes parts whose names start with `prefix` (a provider that exited). */
  clear(prefix: string): void {
    let changed = false;
    for (const k of [...this.parts.keys()]) if (k.startsWith(prefix)) changed = this.parts.delete(k) || changed;
    if (changed) this.emit('change');
  }

  report(): ReadinessReport {
    const parts = Object.fromEntries(this.parts);
    return { ready: [...this.parts.values()].every((p) => p.ready), parts };
  }
}

/** The body of `/readyz`: `ready` or `not ready` and one line per part. */
export function readinessText(r: ReadinessReport): string {
  const lines = Object.entries(r.parts).map(([k, p]) => `${k}: ${p.ready ? 'ready' : 'not ready'}${p.reason ? ` (${p.reason})` : ''}`);
  return `${r.ready ? 'ready' : 'not ready'}\n${lines.join('\n')}${lines.length > 0 ? '\n' : ''}`;
}
