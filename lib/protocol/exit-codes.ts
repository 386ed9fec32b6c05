import { ErrorCodes, isDstreamError } from '../errors.js';

/** Exit codes of dstream and of every provider built on runProvider(). docs/protocol.md lists them. */
export const ExitCodes = {
  OK: 0,
  /** A run-time failure: a sink, a source, a handler threw. */
  FAILURE: 1,
  /** Bad flags, bad config, unknown or unsupported command. Fix the invocation. */
  USAGE: 2,
  /** The other side broke the protocol (no header, malformed header). */
  PROTOCOL: 3,
  /** A record was invalid and the policy was `fail`. */
  INVALID_DATA: 4,
  /** Stopped by SIGINT after a clean drain. */
  INTERRUPTED: 130,
  /** Stopped by SIGTERM after a clean drain. */
  TERMINATED: 143,
  /** Killed without a drain (SIGKILL, or an in-process provider's kill signal). */
  KILLED: 137,
} as const;

export function exitCodeFor(err: unknown): number {
  if (!isDstreamError(err)) return ExitCodes.FAILURE;
  switch (err.code) {
    case ErrorCodes.INVALID_OPTION:
    case ErrorCodes.CONFIG:
    case ErrorCodes.UNKNOWN_COMMAND:
    case ErrorCodes.UNSUPPORTED_COMMAND:
    case ErrorCodes.INVALID_DESTINATION:
    case ErrorCodes.DESTINATION_COLLISION:
      return ExitCodes.USAGE;
    case ErrorCodes.PROTOCOL:
      return ExitCodes.PROTOCOL;
    case ErrorCodes.INVALID_RECORD:
    case ErrorCodes.LINE_TOO_LONG:
      return ExitCodes.INVALID_DATA;
    default:
      return ExitCodes.FAILURE;
  }
}
