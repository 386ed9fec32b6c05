/**
 * Envelope -> Service Bus message. The mapping (docs/service-bus.md):
 * - body: the whole envelope (default) or only `data`; contentType application/json
 * - subject: OperationType
 * - applicationProperties: table, schema, database, operation, lsn, seq (those present)
 * - messageId: SHA-1 (hex) of destination, LSN, Seq and operation when the envelope has an LSN,
 *   so a replay after a crash produces the same ids and duplicate detection drops them. LSN and Seq
 *   are hashed in mssql-cdc's form (0x + upper-case hex), whatever form the producer wrote, so the
 *   original Go ingester's lower-case unprefixed values give the same ids
 * - sessionId: the value of a key column, when `sessionKey` names one (per-key order on session queues)
 */
import { createHash } from 'node:crypto';
import type { ServiceBusMessage } from '@azure/service-bus';
import type { Envelope } from '../../envelope/types.js';

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
  return createHash('sha1').update(`${destination.toLowerCase()}|${canonicalHex(m.LSN)}|${canonicalHex(m.Seq ?? '')}|${op}`).digest('hex');
}

/**
 * An LSN or Seq in mssql-cdc's form: `0x` + upper-case hex. Accepted as hex: `0x`-prefixed digits
 * of either case, or exactly 20 bare digits (binary(10), as the Go ingester's hex.EncodeToString
 * writes them). Anything else is hashed as written.
 */
export function canonicalHex(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  const m = /^0[xX]([0-9a-fA-F]+)$/.exec(value) ?? /^([0-9a-fA-F]{20})$/.exec(value);
  return m === null ? value : `0x${m[1]!.toUpperCase()}`;
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
  if (options.sessionKey !== undefined) {
    const v = (env.data as Record<string, unknown> | null | undefined)?.[options.sessionKey];
    if (v !== undefined && v !== null) message.sessionId = String(v);
  }
  return message;
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
