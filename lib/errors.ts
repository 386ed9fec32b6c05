/**
 * The one catalogue of dstream errors. Callers branch on `code` (stable strings), never on
 * message text or `instanceof` (two copies of the package would not share classes).
 */

export const ErrorCodes = {
  /** A factory or CLI was given options it cannot work with. Thrown at construction. */
  INVALID_OPTION: 'DSTREAM_ERR_INVALID_OPTION',
  /** A record (line, envelope) is not valid and the invalid-record policy is `fail`. */
  INVALID_RECORD: 'DSTREAM_ERR_INVALID_RECORD',
  /** A line grew past `maxLineBytes` without a newline. */
  LINE_TOO_LONG: 'DSTREAM_ERR_LINE_TOO_LONG',
  /** A rendered destination is not a valid Service Bus entity name. */
  INVALID_DESTINATION: 'DSTREAM_ERR_INVALID_DESTINATION',
  /** Two different tables map to destinations that Service Bus would treat as one. */
  DESTINATION_COLLISION: 'DSTREAM_ERR_DESTINATION_COLLISION',
  /** More destinations than `maxPartitions`. */
  TOO_MANY_PARTITIONS: 'DSTREAM_ERR_TOO_MANY_PARTITIONS',
  /** A partition's sink failed; the cause is attached. */
  PARTITION_FAILED: 'DSTREAM_ERR_PARTITION_FAILED',
  /** A protocol line (command header, handshake, result) is malformed. */
  PROTOCOL: 'DSTREAM_ERR_PROTOCOL',
  /** The command header names a verb that is not part of the protocol. */
  UNKNOWN_COMMAND: 'DSTREAM_ERR_UNKNOWN_COMMAND',
  /** The verb is part of the protocol, but this provider has no handler for it. */
  UNSUPPORTED_COMMAND: 'DSTREAM_ERR_UNSUPPORTED_COMMAND',
  /** Provider configuration does not match the provider's schema. */
  CONFIG: 'DSTREAM_ERR_CONFIG',
  /** A provider handler failed. */
  PROVIDER: 'DSTREAM_ERR_PROVIDER',
  /** A single record is larger than the queue's maximum message size. */
  MESSAGE_TOO_LARGE: 'DSTREAM_ERR_MESSAGE_TOO_LARGE',
  /** The destination queue does not exist. */
  QUEUE_NOT_FOUND: 'DSTREAM_ERR_QUEUE_NOT_FOUND',
  /** Service Bus refused the credentials. */
  UNAUTHORIZED: 'DSTREAM_ERR_UNAUTHORIZED',
  /** A file could not be opened, written or synced. */
  IO: 'DSTREAM_ERR_IO',
  /** The provisioning engine cannot run (Pulumi CLI or plugin missing, no credentials) or failed. */
  PROVISIONER: 'DSTREAM_ERR_PROVISIONER',
  /** Service Bus kept failing after every retry, or failed in a way no retry fixes. */
  SERVICE_BUS: 'DSTREAM_ERR_SERVICE_BUS',
  /** SQL Server's CDC cleanup removed changes after the stored position: they cannot be read any more. */
  CDC_GAP: 'DSTREAM_ERR_CDC_GAP',
  /** CDC is not enabled on the database or on a table dstream was asked to read. */
  CDC_NOT_ENABLED: 'DSTREAM_ERR_CDC_NOT_ENABLED',
  /** A table named in the config does not exist. */
  TABLE_NOT_FOUND: 'DSTREAM_ERR_TABLE_NOT_FOUND',
  /** SQL Server could not be reached, or refused the login. */
  SQL_CONNECT: 'DSTREAM_ERR_SQL_CONNECT',
  /** The login lacks a permission dstream needs; the message names it. */
  SQL_PERMISSION: 'DSTREAM_ERR_SQL_PERMISSION',
  /** SQL Server answered a statement with an error. */
  SQL: 'DSTREAM_ERR_SQL',
  /** A read's first row did not come within the request timeout, even for the smallest window. */
  SQL_TIMEOUT: 'DSTREAM_ERR_SQL_TIMEOUT',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export interface DstreamErrorOptions {
  cause?: unknown;
  /** Structured facts about where it happened (line, table, destination, field...). */
  details?: Record<string, unknown>;
}

export class DstreamError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: DstreamErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DstreamError';
    this.code = code;
    this.details = options.details ?? {};
  }
}

/** True when `err` carries a dstream code; works across copies of the package. */
export function isDstreamError(err: unknown, code?: ErrorCode): err is DstreamError {
  if (typeof err !== 'object' || err === null) return false;
  const c = (err as { code?: unknown }).code;
  if (typeof c !== 'string' || !c.startsWith('DSTREAM_ERR_')) return false;
  return code === undefined || c === code;
}

export function invalidOption(message: string, details?: Record<string, unknown>): DstreamError {
  return new DstreamError(ErrorCodes.INVALID_OPTION, message, { details });
}

/** A message from any thrown value, for places that must report a failure as text. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
