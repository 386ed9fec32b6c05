/**
 * Envelope types. The wire shape `{"source","type","data","metadata"}` and its metadata keys are
 * shared with existing dstream providers (Go and .NET), so both names and casing are fixed.
 */

export type OperationType = 'Insert' | 'Update' | 'Delete' | 'UpdateBefore' | 'Read';

export interface EnvelopeMetadata {
  TableName?: string;
  Schema?: string;
  Database?: string;
  OperationType?: OperationType | string;
  OperationID?: number | string;
  /** Commit LSN, hex. */
  LSN?: string;
  /** Sequence value within the commit, hex. */
  Seq?: string;
  CommitTime?: string;
  /** Target queue or file, stamped by `route()`. */
  Destination?: string;
  [key: string]: unknown;
}

export interface Envelope<D = unknown> {
  source?: string;
  type?: string;
  data: D;
  metadata?: EnvelopeMetadata;
}

/** The `type` of a checkpoint marker envelope. */
export const CHECKPOINT_TYPE = 'checkpoint';

export interface CheckpointData {
  /** Opaque source position: only the input provider that made it interprets it. */
  position: unknown;
}

export interface CheckpointEnvelope extends Envelope<CheckpointData> {
  type: typeof CHECKPOINT_TYPE;
}

export function isCheckpoint(e: Envelope): e is CheckpointEnvelope {
  return e.type === CHECKPOINT_TYPE;
}

export function checkpoint(position: unknown, source?: string): CheckpointEnvelope {
  return source === undefined
    ? { type: CHECKPOINT_TYPE, data: { position }, metadata: {} }
    : { source, type: CHECKPOINT_TYPE, data: { position }, metadata: {} };
}

/** Table identity of an envelope as `schema.table` (schema defaults to `dbo`), or undefined. */
export function tableOf(e: Envelope): string | undefined {
  const t = e.metadata?.TableName;
  if (typeof t !== 'string' || t.length === 0) return undefined;
  const s = e.metadata?.Schema;
  return typeof s === 'string' && s.length > 0 ? `${s}.${t}` : t;
}
