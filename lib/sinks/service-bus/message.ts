/**
 * Envelope -> Service Bus message. The mapping (docs/service-bus.md):
 * - body: the whole envelope (default) or only `data`; contentType application/json
 * - subject: OperationType
 * - applicationProperties: table, schema, database, operation, lsn, seq (those present)
 * - messageId: SHA-1 (hex) of destination, LSN, Seq and operation when the envelope has an LSN,
 *   so a replay after a crash produces the same ids and duplicate detection drops them
 * - sessionId: the value of a key column, when `sessionKey` names one (per-key order on session queues)
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

export function messageIdOf(destination: string, env: Envelope): string | undefined {
  const m = env.metadata;
  if (typeof m?.LSN !== 'string' || m.LSN.length === 0) return undefined;
  const op = m.OperationID ?? m.OperationType ?? '';
  return createHash('sha1').update(`${destination.toLowerCase()}|${m.LSN}|${m.Seq ?? ''}|${op}`).digest('hex');
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
  const id = messageIdOf(destination, env);
  if (id !== undefined) message.messageId = id;
  if (options.sessionKey !== undefined) message.sessionId = sessionIdOf(destination, env, options.sessionKey);
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
