/**
 * Envelope -> Service Bus message. The mapping (docs/service-bus.md):
 * - body: the whole envelope (default) or only `data`; contentType application/json
 * - subject: OperationType
 * - applicationProperties: table, schema, database, operation, lsn, seq (those present)
 * - messageId: SHA-1 (hex) of destination, LSN, Seq and operation when the envelope has an LSN,
 *   so a replay after a crash produces the same ids and duplicate detection drops them; without an
 *   LSN, SHA-1 of destination and the record itself (data and metadata), for the same reason. LSN
 *   and Seq are hashed in mssql-cdc's form (0x + upper-case hex), whatever form the producer wrote,
 *   so the original Go ingester's lower-case unprefixed values give the same ids
 * - sessionId: the value of a key column, when `sessionKey` names one (per-key order on session queues)
 * - partitionKey: the table (or the queue), when there is no sessionId: a partitioned queue then
 *   keeps the table's order in one partition instead of spreading it over all of them
 */
import { createHash, hash } from 'node:crypto';
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
  return messageId(destination.toLowerCase(), env);
}

/**
 * messageIdOf() with the destination already lower-cased (a sink does that once per queue).
 * crypto.hash() is the one-shot form of createHash().update().digest(): the same SHA-1 of the same
 * UTF-8 bytes, without a Hash object per record.
 */
function messageId(lowerDestination: string, env: Envelope): string {
  const m = env.metadata;
  if (typeof m?.LSN !== 'string' || m.LSN.length === 0) {
    // No position to name it by: the record's own content, so that a retry or a replay of the same
    // record has the same id. (Two records identical in data and metadata collapse into one.)
    const { Destination: _d, ...meta } = m ?? {};
    return hash('sha1', `${lowerDestination}|record|${stableJson({ source: env.source, type: env.type, data: env.data, metadata: meta })}`);
  }
  const op = m.OperationID ?? m.OperationType ?? '';
  return hash('sha1', `${lowerDestination}|${canonicalHex(m.LSN)}|${canonicalHex(m.Seq ?? '')}|${op}`);
}

/** Already in mssql-cdc's form: every LSN and Seq that mssql-cdc writes, returned as they are. */
const CANONICAL_HEX = /^0x[0-9A-F]+$/;

/**
 * An LSN or Seq in mssql-cdc's form: `0x` + upper-case hex. Accepted as hex: `0x`-prefixed digits
 * of either case, or exactly 20 bare digits (binary(10), as the Go ingester's hex.EncodeToString
 * writes them). Anything else is hashed as written.
 */
export function canonicalHex(value: unknown): unknown {
  if (typeof value !== 'string' || CANONICAL_HEX.test(value)) return value;
  const m = /^0[xX]([0-9a-fA-F]+)$/.exec(value) ?? /^([0-9a-fA-F]{20})$/.exec(value);
  return m === null ? value : `0x${m[1]!.toUpperCase()}`;
}

/** Service Bus takes a PartitionKey of at most 128 characters. */
const MAX_PARTITION_KEY = 128;

/** The partition key that keeps a table's records in one partition: the table, else the queue. */
export function partitionKeyOf(destination: string, env: Envelope): string {
  return partitionKey(destination.toLowerCase(), env);
}

function partitionKey(lowerDestination: string, env: Envelope): string {
  const m = env.metadata ?? {};
  const key = typeof m.TableName === 'string' ? `${typeof m.Schema === 'string' ? `${m.Schema}.` : ''}${m.TableName}` : lowerDestination;
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

/** Envelope -> Service Bus message for one destination; what all its records share is worked out once. */
export function messageMapper(destination: string, options: MessageOptions = {}): (env: Envelope) => ServiceBusMessage {
  const lowerDestination = destination.toLowerCase();
  const dataOnly = options.body === 'data';
  const sessionKey = options.sessionKey;
  return (env) => {
    const m = env.metadata ?? {};
    const props: Record<string, string | number> = {};
    if (typeof m.TableName === 'string') props.table = m.TableName;
    if (typeof m.Schema === 'string') props.schema = m.Schema;
    if (typeof m.Database === 'string') props.database = m.Database;
    if (typeof m.OperationType === 'string') props.operation = m.OperationType;
    if (typeof m.LSN === 'string') props.lsn = m.LSN;
    if (typeof m.Seq === 'string') props.seq = m.Seq;
    const message: ServiceBusMessage = {
      body: dataOnly ? env.data : env,
      contentType: 'application/json',
      applicationProperties: props,
    };
    if (typeof m.OperationType === 'string') message.subject = m.OperationType;
    message.messageId = messageId(lowerDestination, env);
    if (sessionKey !== undefined) message.sessionId = sessionIdOf(destination, env, sessionKey);
    // With a sessionId the session is the partition key (the SDK refuses a different one).
    else message.partitionKey = partitionKey(lowerDestination, env);
    return message;
  };
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
