/**
 * Driver errors -> dstream errors that say what to do. Connection errors name host:port (from the
 * connection string's Server, never its password); permission errors name what was being done.
 */
import { DstreamError, ErrorCodes, isDstreamError, messageOf } from '../../errors.js';
import { tableKey, type TableRef } from './tables.js';

interface DriverError {
  name?: string;
  code?: string;
  number?: number;
  message?: string;
}

const CONNECTION_CODES = new Set(['ESOCKET', 'ETIMEOUT', 'ECONNCLOSED', 'ECONNRESET', 'EINSTLOOKUP', 'ENOTOPEN', 'ECONNREFUSED']);
/** Azure SQL and SQL Server errors that mean "try again on a new connection". */
const TRANSIENT_NUMBERS = new Set([4060, 40197, 40501, 40613, 49918, 49919, 49920, 10928, 10929, 233, 10053, 10054, 10060]);
const PERMISSION_NUMBERS = new Set([229, 230, 262, 297, 300, 916, 15247, 22902]);

/** True for a lost or refused connection that a new connection may cure (a failed login is not). */
export function isConnectionLost(err: unknown): boolean {
  if (isDstreamError(err)) return false;
  const e = err as DriverError;
  if (e?.code === 'ELOGIN') return false;
  if (e?.name === 'ConnectionError') return true;
  if (e?.code !== undefined && CONNECTION_CODES.has(e.code)) return true;
  return e?.number !== undefined && TRANSIENT_NUMBERS.has(e.number);
}

/**
 * What the socket said under a driver's connection error: tedious reports a refused connection as
 * "Could not connect (sequence)" and keeps the ECONNREFUSED (one per address tried) underneath.
 */
function socketReason(err: unknown): string | undefined {
  const seen = new Set<unknown>();
  const reasons: string[] = [];
  const walk = (e: unknown): void => {
    if (e === null || typeof e !== 'object' || seen.has(e)) return;
    seen.add(e);
    const x = e as { errors?: unknown[]; cause?: unknown; originalError?: unknown; syscall?: string; message?: string };
    if (typeof x.syscall === 'string' && typeof x.message === 'string') reasons.push(x.message);
    for (const inner of x.errors ?? []) walk(inner);
    walk(x.originalError);
    walk(x.cause);
  };
  walk(err);
  return reasons.length > 0 ? [...new Set(reasons)].join('; ') : undefined;
}

/** A driver error as a DstreamError; `what` says what dstream was doing ("reading dbo.Persons"). */
export function sqlFailure(err: unknown, where: string, what: string): DstreamError {
  if (isDstreamError(err)) return err as DstreamError;
  const e = err as DriverError;
  const message = messageOf(err);
  if (e?.code === 'ELOGIN') {
    return new DstreamError(ErrorCodes.SQL_CONNECT, `SQL Server at ${where} refused the login: ${message} (check User Id and Password in the connection string, and that the login may open the database)`, { cause: err, details: { where } });
  }
  if (isConnectionLost(err)) {
    const hint = /certificate/i.test(message)
      ? ' (the server presents a certificate this machine does not trust: add TrustServerCertificate=true to the connection string, or install its CA)'
      : '';
    const text = what === 'connecting' ? `could not connect to SQL Server at ${where}` : `${what}: the connection to SQL Server at ${where} failed`;
    const reason = socketReason(err);
    const because = reason !== undefined && !message.includes(reason) ? ` (${reason})` : '';
    return new DstreamError(ErrorCodes.SQL_CONNECT, `${text}: ${message}${because}${hint}`, { cause: err, details: { where } });
  }
  if (e?.number !== undefined && PERMISSION_NUMBERS.has(e.number)) {
    return new DstreamError(
      ErrorCodes.SQL_PERMISSION,
      `${what}: permission denied at ${where}: ${message}. The login needs SELECT on the captured tables and on schema cdc ` +
        `(and membership in the capture instance's gating role, if it has one); init with enable_cdc needs sysadmin (database) and db_owner (tables)`,
      { cause: err, details: { where, number: e.number } },
    );
  }
  return new DstreamError(ErrorCodes.SQL, `${what} failed at ${where}: ${message}`, { cause: err, details: { where, ...(e?.number !== undefined ? { number: e.number } : {}) } });
}

/** The SQL checkpoint table is not there (error 208 on it). */
export function missingCheckpointTable(table: TableRef, where: string, cause: unknown): DstreamError {
  return new DstreamError(ErrorCodes.CONFIG, `the checkpoint table ${tableKey(table)} does not exist in ${where}: create it with \`dstream init <task>\` and create_checkpoint_table = true`, { cause });
}
