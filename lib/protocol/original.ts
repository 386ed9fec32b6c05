/**
 * Providers written for the original dstream (katasec/dstream's Go CLI and katasec/dstream-sdk-dotnet)
 * speak an earlier form of the protocol: a handshake `{"status":"ready"}` without `protocol` (or
 * none at all), lifecycle answers as the .NET SDK's InfrastructureResult
 * `{"status":"Success"|"Failed","resources":["..."],"metadata":{..},"message":"..","error":".."}`,
 * no checkpoints and no acknowledgements. This file reads them; docs/protocol.md has the table.
 */
import type { ResourceReport, ResultLine, StreamDescriptor } from './messages.js';

export type OriginalStatus = 'Success' | 'Failed';

export interface OriginalResult {
  status: OriginalStatus;
  resources?: string[] | null;
  metadata?: Record<string, unknown> | null;
  message?: string | null;
  error?: string | null;
}

export function isOriginalResult(value: unknown): value is OriginalResult {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const v = value as Record<string, unknown>;
  return (v.status === 'Success' || v.status === 'Failed') && !('data' in v);
}

/**
 * An original result as a dstream result line: `Success` is ok, each resource string a resource
 * (kind `resource`, no action: the original says only its name), `message` the summary;
 * `Failed` is an error whose message joins the provider's `message` and `error`.
 */
export function fromOriginalResult(r: OriginalResult, command: string): ResultLine {
  if (r.status === 'Failed') {
    const message = [r.message, r.error].filter((s): s is string => typeof s === 'string' && s.length > 0).join(': ') || 'failed without a message';
    return { status: 'error', command, message };
  }
  const resources: ResourceReport[] = (r.resources ?? []).map((name) => ({ kind: 'resource', name: String(name) }));
  return {
    status: 'ok',
    command,
    resources,
    ...(typeof r.message === 'string' ? { message: r.message, summary: r.message } : {}),
    ...(r.metadata ? { metadata: r.metadata } : {}),
  };
}

/**
 * The streams of a task whose input cannot be asked (`discover` would start an original input
 * streaming): from the `tables` its output's config lists (the original ASB output has one), or else
 * its input's (the original MSSQL ingester's). `dbo.Persons` -> `{ name: "Persons", schema: "dbo" }`.
 */
export function streamsFromConfig(...configs: Array<Record<string, unknown>>): StreamDescriptor[] {
  for (const config of configs) {
    const tables = config.tables;
    if (!Array.isArray(tables) || tables.length === 0) continue;
    return tables
      .filter((t): t is string => typeof t === 'string' && t.length > 0)
      .map((t) => {
        const dot = t.lastIndexOf('.');
        return dot < 0 ? { name: t } : { name: t.slice(dot + 1), schema: t.slice(0, dot) };
      });
  }
  return [];
}
