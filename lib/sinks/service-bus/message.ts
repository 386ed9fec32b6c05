/**
 * Envelope -> Service Bus message. The mapping (docs/service-bus.md):
 * - body: the whole envelope (default) or only `data`; contentType application/json
 * - subject: OperationType
 * - applicationProperties: table, schema, database, operation, lsn, seq (those present)
 * - messageId: SHA-1 (hex) of destination, LSN, Seq and operation when the envelope has an LSN,
 *   so a replay after a crash produces the same ids and duplicate detection drops them; without an
 *   LSN, SHA-1 of destination and the record itself (data and metadata), for the same reason
 * - sessionId: the value of a key column, when `sessionKey` names one (per-key order on session queues)
 * - partitionKey: the table (or the queue), when there is no sessionId: a partitioned queue then
 *   keeps the table's order in one partition instead of spreading it over all of them
 */
import { createHash } from 'node:crypto';
import type { ServiceBusMessage } from '@azure/service-bus';
import type { Envelope } from '../../envelope/types.js';
import { DstreamError, ErrorCodes } from '../../errors.js';

/** Service Bus refuses a SessionId longer than this. */
export const MAX_SESSION_ID_LENGTH = 128;

export type BodyMode = 'envelope' | 'data';

export interface MessageOptions {
  body?: BodyMode;
  /** Column of `data` whose value becomes the sessionId. */
  sessionKey?: string;
}

export function messageIdOf(destination: string, env: Envelope): string {
  const m = env.metadata;
  if (typeof m?.LSN !== 'string' || m.LSN.length === 0) {
    // No position to name it by: the record's own content, so that a retry or a replay of the same
    // record has the same id. (Two records identical in data and metadata collapse into one.)
    const { Destination: _d, ...meta } = m ?? {};
    return createHash('sha1').update(`${destination.toLowerCase()}|record|${stableJson({ source: env.source, type: env.type, data: env.data, metadata: meta })}`).digest('hex');
  }
  const op = m.OperationID ?? m.OperationType ?? '';
  return createHash('sha1').update(`${destination.toLowerCase()}|${m.LSN}|${m.Seq ?? ''}|${op}`).digest('hex');
}

/** Service Bus takes a PartitionKey of at most 128 characters. */
const MAX_PARTITION_KEY = 128;

/** The partition key that keeps a table's records in one partition: the table, else the queue. */
export function partitionKeyOf(destination: string, env: Envelope): string {
  const m = env.metadata ?? {};
  const key = typeof m.TableName === 'string' ? `${typeof m.Schema === 'string' ? `${m.Schema}.` : ''}${m.TableName}` : destination.toLowerCase();
  return key.length <= MAX_PARTITION_KEY ? key : createHash('sha1').update(key).digest('hex');
}

/** JSON with object keys sorted, so that equal records hash equally whatever their key order. */
function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.keys(v as object)
      .sort()
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

export function toServiceBusMessage(destination: string, env: Envelope, options: MessageOptions = {}): ServiceBusMessage {
  const m = env.metadata ?? {};
  const props: Record<string, string | number> = {};
  if (typeof m.TableName === 'string') props.table = m.TableName;
  if (typeof m.Schema === 'string') props.schema = m.Schema;
  if (typeof m.Database === 'string') props.database = m.Database;
  if (typeof m.OperationType === 'string') props.operation = m.OperationType;
  if (typeof m.LSN === 'string') props.lsn = m.LSN;
  if (typeof m.Seq === 'string') props.seq = m.Seq;
  const message: ServiceBusMessage = {
    body: options.body === 'data' ? env.data : env,
    contentType: 'application/json',
    applicationProperties: props,
  };
  if (typeof m.OperationType === 'string') message.subject = m.OperationType;
  message.messageId = messageIdOf(destination, env);
  if (options.sessionKey !== undefined) message.sessionId = sessionIdOf(destination, env, options.sessionKey);
  // With a sessionId the session is the partition key (the SDK refuses a different one).
  else message.partitionKey = partitionKeyOf(destination, env);
  return message;
}

/**
 * The SessionId of a record for a session queue. A record without the key is refused as invalid:
 * Service Bus would reject the whole batch it sits in, and sending it without a session would
 * lose its place in the key's order.
 */
function sessionIdOf(destination: string, env: Envelope, key: string): string {
  const v = (env.data as Record<string, unknown> | null | undefined)?.[key];
  const where = `${describeRecord(env)} for queue "${destination}"`;
  const details = { queue: destination, sessionKey: key, table: env.metadata?.TableName, lsn: env.metadata?.LSN };
  if (v === undefined || v === null || (typeof v === 'object' && v !== null)) {
    const got = v === undefined ? 'has no' : v === null ? 'has a null' : 'has a non-scalar';
    throw new DstreamError(ErrorCodes.INVALID_RECORD, `${where} ${got} value in session_key column "${key}"; every record of a session queue needs one (check session_key names a key column of the table)`, { details });
  }
  const id = String(v);
  if (id.length > MAX_SESSION_ID_LENGTH) {
    throw new DstreamError(ErrorCodes.INVALID_RECORD, `${where}: session_key column "${key}" holds ${id.length} characters; Service Bus accepts a SessionId of at most ${MAX_SESSION_ID_LENGTH}`, { details });
  }
  return id;
}

/** Where a record came from, for messages: table, LSN, Seq. */
export function describeRecord(env: Envelope): string {
  const m = env.metadata ?? {};
  const parts = [
    typeof m.TableName === 'string' ? `table ${m.Schema ? `${m.Schema}.` : ''}${m.TableName}` : undefined,
    typeof m.LSN === 'string' ? `LSN ${m.LSN}` : undefined,
    typeof m.Seq === 'string' ? `Seq ${m.Seq}` : undefined,
  ].filter((x) => x !== undefined);
  return parts.length > 0 ? parts.join(', ') : 'record without table or LSN';
}
