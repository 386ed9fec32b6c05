/**
 * skipAcknowledged(): for an output started again on a replay of the same stream (a file, or an
 * input that starts from the beginning), drops everything up to and including the checkpoint it
 * acknowledged last, then passes the rest. Positions are opaque, so the checkpoint is recognised by
 * equality (source and position). An input that ends without it was not a replay of that stream:
 * that is an error, not a silent success with nothing sent.
 */
import { Transform } from 'node:stream';
import { DstreamError, ErrorCodes } from '../errors.js';
import { CHECKPOINT_TYPE, type CheckpointEnvelope, type Envelope } from '../envelope/types.js';

export interface SkipAcknowledgedOptions {
  /** The last acknowledged checkpoint. */
  checkpoint: CheckpointEnvelope;
  /** Where it was stored, for messages. */
  from: string;
  /** Called once the checkpoint was found, with what was skipped. */
  onResume?: (skipped: { rows: number; checkpoints: number }) => void;
}

const sameCheckpoint = (a: CheckpointEnvelope, b: Envelope) =>
  b.type === CHECKPOINT_TYPE && (a.source ?? null) === (b.source ?? null) && JSON.stringify((b as CheckpointEnvelope).data?.position) === JSON.stringify(a.data.position);

export function skipAcknowledged(options: SkipAcknowledgedOptions): Transform {
  let skipping = true;
  const skipped = { rows: 0, checkpoints: 0 };
  return new Transform({
    objectMode: true,
    transform(env: Envelope, _enc, callback) {
      if (!skipping) {
        callback(null, env);
        return;
      }
      if (sameCheckpoint(options.checkpoint, env)) {
        skipping = false;
        options.onResume?.(skipped);
      } else if (env.type === CHECKPOINT_TYPE) skipped.checkpoints++;
      else skipped.rows++;
      callback();
    },
    flush(callback) {
      if (!skipping) {
        callback();
        return;
      }
      callback(
        new DstreamError(
          ErrorCodes.INVALID_OPTION,
          `the input ended without the checkpoint stored in ${options.from} (position ${JSON.stringify(options.checkpoint.data.position)}): it is not a replay of the stream that was delivered, and nothing was sent (${skipped.rows} rows skipped); remove the state file or turn skip_acknowledged off to deliver it`,
          { details: { stateFile: options.from, skippedRows: skipped.rows } },
        ),
      );
    },
  });
}
