/**
 * What a task wants to exist: one queue per table, named by the same template, rules and
 * case-insensitive collision check as `route()`, with the task's queue settings.
 */
import { parseTable } from '../envelope/table.js';
import type { StreamDescriptor } from '../protocol/messages.js';
import { DEFAULT_TEMPLATE, planDestinations, type TableRef } from '../streams/destination.js';
import { invalidOption } from '../errors.js';
import { settingProblems } from './queue-checks.js';
import { DEFAULT_QUEUE_SETTINGS, type QueueSettings } from './service-bus-admin.js';

export interface DesiredQueue {
  kind: 'queue';
  name: string;
  table: TableRef;
  settings: QueueSettings;
}

/** `Persons`, `sales.Orders`, `[my.schema].[Order Details]` or a discover descriptor -> a table reference. */
export function tableRefOf(stream: StreamDescriptor | string): TableRef {
  if (typeof stream === 'string') return parseTable(stream);
  const ref: TableRef = { table: stream.name };
  if (stream.schema !== undefined) ref.schema = stream.schema;
  if (stream.database !== undefined) ref.database = stream.database;
  return ref;
}

export function desiredQueues(streams: Array<StreamDescriptor | string>, template: string = DEFAULT_TEMPLATE, settings: QueueSettings = {}): DesiredQueue[] {
  const merged = { ...DEFAULT_QUEUE_SETTINGS, ...settings };
  // Refused here, before any call, rather than by Service Bus halfway through an init.
  const problems = settingProblems(merged as Record<string, unknown>);
  if (problems.length > 0) throw invalidOption(`queue settings Service Bus would refuse: ${problems.join('; ')}`, { problems });
  return planDestinations(streams.map(tableRefOf), template).map((a) => ({ kind: 'queue', name: a.destination, table: a.table, settings: merged }));
}
