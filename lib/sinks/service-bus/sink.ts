/**
 * serviceBusSink(): a Writable of envelopes for one queue.
 *
 * Records go into an open ServiceBusMessageBatch (createMessageBatch + tryAddMessage, so a batch
 * fills up to the entity's maximum, which the SDK learns from the link, capped at the 1 MB Service
 * Bus accepts in one batch; a larger record that the link takes is sent on its own). A queue that
 * refuses batches of distinct MessageIds (partitioned, with duplicate detection) gets its records
 * one per send from then on, still one in flight, so in order. A batch is sent when full,
 * `lingerMs` after its first record, and at the end. One batch is in flight at a time, which keeps
 * the queue's order across retries; while it flies the next one fills, and a writer that fills
 * that one too waits (backpressure). A linger that ends while a batch flies sends nothing then:
 * the open batch goes when the one in flight is accepted, with what came meanwhile. Were it
 * queued behind, records arriving a few per linger would never fill a batch, and a stalled
 * Service Bus would queue batches, and memory, without end. Write callbacks come early to keep records flowing, so
 * durability is reported separately: 'ack' events with the number of records, in order, that
 * Service Bus accepted (see DURABLE_ACKS in streams/partition.ts). A failed send never acks.
 */
import { Writable } from 'node:stream';
import type { CreateMessageBatchOptions, ServiceBusMessage, ServiceBusMessageBatch, ServiceBusSender } from '@azure/service-bus';
import { DstreamError, ErrorCodes, invalidOption, isDstreamError, messageOf } from '../../errors.js';
import type { Envelope } from '../../envelope/types.js';
import { DURABLE_ACKS } from '../../streams/partition.js';
import { acquireClient, type ClientLease, type ConnectionOptions } from './client.js';
import { attemptsText, backoffOf, retry } from '../../retry.js';
import { classify, connectionCause, type RetryOptions } from './errors.js';
import { tableLabel } from '../../envelope/table.js';
import { describeRecord, messageMapper, type MessageOptions } from './message.js';
import type { Listen, WritableEvents } from '../../events.js';

export type OversizePolicy = 'fail' | 'dead-letter';

export interface ServiceBusSinkOptions extends ConnectionOptions, MessageOptions {
  queue: string;
  /** Send a batch this long after its first record, full or not. Default 20 ms. */
  lingerMs?: number;
  /** Cap on messages per batch (Service Bus allows 4500 per send). Default 4500. */
  maxBatchMessages?: number;
  retry?: RetryOptions;
  /** A record larger than the queue's maximum message size: `fail` (default) or `dead-letter`. */
  onOversize?: OversizePolicy;
  /** Where `dead-letter` writes `{"reason","queue","size","record"}` lines. Not ended by the sink. */
  deadLetter?: Writable;
  /** Envelopes buffered before the batch logic. Default 256. */
  highWaterMark?: number;
  /**
   * The longest wait for Service Bus to answer one send before it is tried again. A connection
   * that drops under a send leaves it waiting (the SDK does not fail sends in flight), so the
   * first attempt waits less: a few times the slowest answer seen so far, at least
   * `firstSendTimeoutMs`; each timed-out attempt doubles the wait. The retry resends, and
   * duplicate detection drops the copy. Default 30 s.
   */
  sendTimeoutMs?: number;
  /** Floor of the first attempt's wait (see sendTimeoutMs); five times that before the first answer. Default 2 s. */
  firstSendTimeoutMs?: number;
  /** Called once when Service Bus answers slower than `sendTimeoutMs` and the wait grows past it. */
  onWarning?: (message: string) => void;
  /**
   * Called once when the queue turns out not to exist; when it resolves (the queue was created),
   * the send is tried again. Without it a missing queue fails the stream.
   */
  onMissingQueue?: (queue: string) => Promise<void>;
  /** Called before each retry, for logs. */
  onRetry?: (info: { queue: string; attempt: number; delayMs: number; error: unknown }) => void;
  /** What happens to records and sends, for metrics and readiness (lib/metrics/delivery.ts). */
  observer?: SinkObserver;
}

/** Kinds of failed attempts, for metrics: a fixed set, so label values stay few. */
export type RetryKind = 'throttled' | 'timeout' | 'connection' | 'other';

/**
 * Reports of a sink's work, in order per queue: `received` for each record taken into a batch,
 * then `delivered` once Service Bus accepted it (`records` of them, oldest first).
 */
export interface SinkObserver {
  received(queue: string, table: string, commitTime: string | undefined, bytes: number): void;
  /** `fill`: the batch's size over the largest one the queue takes (absent when nothing was sent, only set aside). */
  delivered(queue: string, info: { records: number; fill?: number }): void;
  /** One send accepted, in seconds. */
  sent(queue: string, seconds: number): void;
  retried(queue: string, kind: RetryKind): void;
  /** A record set aside (dead-lettered) instead of sent. */
  setAside(queue: string): void;
}

export interface ServiceBusSinkStats {
  queue: string;
  records: number;
  messages: number;
  batches: number;
  bytes: number;
  retries: number;
  deadLettered: number;
  /** Sum over sent batches of their size / the maximum batch size; divide by batches for the mean fill. */
  fill: number;
}

interface OpenBatch {
  batch: ServiceBusMessageBatch;
  /** The batch's messages, to send them one at a time to a queue that refuses the batch. */
  messages: ServiceBusMessage[];
  /** Records this batch stands for: its messages and any dead-lettered records among them. */
  records: number;
  /** A message larger than a batch may be (but within the link's maximum), sent on its own instead. */
  alone?: { message: ServiceBusMessage; size: number };
}

const MAX_MESSAGES_PER_SEND = 4500;
/**
 * Service Bus accepts at most 1 MB in one batch, whatever the link announces: on Premium with large
 * messages the link says up to 100 MB, which holds for one message sent alone only; a bigger batch
 * gets the link force-detached (azure-sdk-for-js#33278).
 */
export const MAX_BATCH_BYTES = 1024 * 1024;

/**
 * A partitioned queue with duplicate detection refuses any batch of messages with distinct
 * MessageIds (the service does not implement it); the SDK reports it as a GeneralError, so only
 * the service's words tell it apart.
 */
function refusesBatches(err: unknown): boolean {
  return /Batching brokered messages with distinct SessionId, PartitionKey, or MessageId is not supported/i.test(messageOf(err));
}

/** `serviceBusSink()`'s events besides a Writable's: `'ack'` with the number of records, in write order, that Service Bus accepted. */
export interface ServiceBusSinkEvents {
  ack: [records: number];
}

export interface ServiceBusSink {
  on: Listen<ServiceBusSinkEvents, this, WritableEvents>;
  once: Listen<ServiceBusSinkEvents, this, WritableEvents>;
  off: Listen<ServiceBusSinkEvents, this, WritableEvents>;
}

export class ServiceBusSink extends Writable {
  readonly [DURABLE_ACKS] = true;
  readonly queue: string;
  private readonly lease: ClientLease;
  private readonly sender: ServiceBusSender;
  private readonly options: ServiceBusSinkOptions;
  private readonly lingerMs: number;
  private readonly maxBatchMessages: number;
  private readonly toMessage: (env: Envelope) => ServiceBusMessage;
  private open: OpenBatch | null = null;
  private opening: Promise<OpenBatch> | null = null;
  /** The batch being sent, chained so that one is in flight at a time; never rejects. */
  private inFlight: Promise<void> = Promise.resolve();
  private linger: NodeJS.Timeout | null = null;
  /** Batches dispatched and not yet settled (one flying, at most one more behind it). */
  private flying = 0;
  /** The open batch's linger ended while a batch was flying: it goes when that one settles. */
  private due = false;
  private failed: Error | null = null;
  private triedCreating = false;
  /** The link's maximum message size, learnt with the first batch (0: not yet). */
  private linkMax = 0;
  /** The queue refused a batch of distinct MessageIds: one message per send from now on. */
  private singly = false;
  private readonly counts: ServiceBusSinkStats;
  /** Aborted by destroy(): cuts short retry waits and sends in flight. */
  private readonly abort = new AbortController();
  /** The slowest answer to a send so far: the first attempt's wait follows it. */
  private slowestSendMs = 0;
  private warnedSlow = false;

  constructor(options: ServiceBusSinkOptions) {
    super({ objectMode: true, highWaterMark: options.highWaterMark ?? 256 });
    if (typeof options.queue !== 'string' || options.queue.length === 0) throw invalidOption('serviceBusSink needs a queue name');
    if (options.onOversize === 'dead-letter' && options.deadLetter === undefined) {
      throw invalidOption('onOversize "dead-letter" needs a deadLetter stream to write to');
    }
    this.options = options;
    this.queue = options.queue;
    this.lingerMs = options.lingerMs ?? 20;
    this.maxBatchMessages = Math.min(options.maxBatchMessages ?? MAX_MESSAGES_PER_SEND, MAX_MESSAGES_PER_SEND);
    this.toMessage = messageMapper(options.queue, options);
    this.lease = acquireClient(options);
    this.sender = this.lease.client.createSender(options.queue);
    this.counts = { queue: options.queue, records: 0, messages: 0, batches: 0, bytes: 0, retries: 0, deadLettered: 0, fill: 0 };
  }

  get stats(): ServiceBusSinkStats {
    return { ...this.counts };
  }

  override _write(env: Envelope, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    let waiting: Promise<void> | undefined;
    try {
      waiting = this.add(env);
    } catch (err) {
      callback(err as Error);
      return;
    }
    if (waiting === undefined) callback();
    else waiting.then(() => callback(), (err: Error) => callback(err));
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.clearLinger();
    this.dispatch();
    this.inFlight
      .then(() => {
        if (this.failed) throw this.failed;
        return this.sender.close();
      })
      .then(() => this.lease.release())
      .then(() => callback(), (err: Error) => callback(err));
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.clearLinger();
    this.abort.abort(err ?? new DstreamError(ErrorCodes.SERVICE_BUS, `sink for queue "${this.queue}" was destroyed`));
    // Closing is best-effort here: the stream is already failing with `err`, which is what the
    // caller must see; a close error is reported only when there is no other.
    this.sender
      .close()
      .catch((closeErr: unknown) => (err === null ? closeErr : undefined))
      .then((closeErr) => this.lease.release().then(() => closeErr))
      .then((closeErr) => callback(err ?? (closeErr as Error | undefined) ?? null), () => callback(err));
  }

  /**
   * Takes a record. Most records fit the open batch and leave it short of full: that is done here
   * and now, without a promise and its callbacks per record. A promise comes back only when the
   * record waits for a batch to be opened or sent.
   */
  private add(env: Envelope): Promise<void> | undefined {
    if (this.failed) throw this.failed;
    const message = this.toMessage(env);
    const open = this.open;
    if (open === null) return this.addToNewBatch(env, message);
    const taken = this.tryTake(open, env, message);
    return taken === false ? this.addAfterFull(env, message, open) : taken;
  }

  private async addToNewBatch(env: Envelope, message: ServiceBusMessage): Promise<void> {
    const open = await this.newBatch();
    const taken = this.tryTake(open, env, message);
    await (taken === false ? this.addAfterFull(env, message, open) : taken);
  }

  /** `message` into `open`: false when it does not fit, else what recordAdded() gives. */
  private tryTake(open: OpenBatch, env: Envelope, message: ServiceBusMessage): false | Promise<void> | undefined {
    const before = open.batch.sizeInBytes;
    if (!open.batch.tryAddMessage(message)) return false;
    this.observe(env, open.batch.sizeInBytes - before);
    return this.recordAdded(open, message);
  }

  /** The record did not fit `open`: the batch is sent and the record tried in a new one, else alone, else oversize. */
  private async addAfterFull(env: Envelope, message: ServiceBusMessage, open: OpenBatch): Promise<void> {
    if (open.batch.count > 0) {
      await this.sendFull();
      open = await this.newBatch();
      const taken = this.tryTake(open, env, message);
      if (taken !== false) {
        await taken;
        return;
      }
    }
    // Larger than a batch may be: on its own, when the link takes a message that large.
    if (this.linkMax > open.batch.maxSizeInBytes) {
      const probe = await this.withRetry('open a batch', () => this.sender.createMessageBatch({ abortSignal: this.abort.signal }));
      if (probe.tryAddMessage(message)) {
        open.alone = { message, size: probe.sizeInBytes };
        this.observe(env, probe.sizeInBytes);
        open.records++;
        this.counts.records++;
        await this.sendFull();
        return;
      }
    }
    await this.oversize(env, message, open);
  }

  private observe(env: Envelope, bytes: number): void {
    const o = this.options.observer;
    if (o === undefined) return;
    o.received(this.queue, tableLabel(env), typeof env.metadata?.CommitTime === 'string' ? env.metadata.CommitTime : undefined, bytes);
  }

  /** Counts a record taken into `open`; a promise when that filled the batch and it is being sent. */
  private recordAdded(open: OpenBatch, message: ServiceBusMessage): Promise<void> | undefined {
    open.messages.push(message);
    open.records++;
    this.counts.records++;
    if (open.batch.count >= (this.singly ? 1 : this.maxBatchMessages)) return this.sendFull();
    this.armLinger();
    return undefined;
  }

  /**
   * Sends the open (full) batch and waits for the one before it: one batch flies while the next
   * fills, and a writer that fills that one too waits here. That bounds memory per queue.
   */
  private async sendFull(): Promise<void> {
    const previous = this.inFlight;
    this.dispatch();
    await previous;
    if (this.failed) throw this.failed;
  }

  private async oversize(env: Envelope, message: ServiceBusMessage, open: OpenBatch): Promise<void> {
    const size = Buffer.byteLength(JSON.stringify(message.body));
    const maxSize = Math.max(this.linkMax, open.batch.maxSizeInBytes);
    const what = `${describeRecord(env)}: message of about ${size} bytes is larger than queue "${this.queue}" accepts (${maxSize} bytes)`;
    if (this.options.onOversize !== 'dead-letter') {
      throw new DstreamError(ErrorCodes.MESSAGE_TOO_LARGE, `${what}; set on_oversize = "dead-letter" to set such records aside`, {
        details: { queue: this.queue, size, maxSize, table: env.metadata?.TableName, lsn: env.metadata?.LSN },
      });
    }
    const line = `${JSON.stringify({ reason: 'message too large', queue: this.queue, size, maxSize, record: env, at: new Date().toISOString() })}\n`;
    await new Promise<void>((resolve, reject) => this.options.deadLetter!.write(line, (err) => (err ? reject(err) : resolve())));
    this.counts.deadLettered++;
    this.counts.records++;
    this.observe(env, 0);
    this.options.observer?.setAside(this.queue);
    // Acknowledged in its place in the order: with the batch it sits in.
    open.records++;
    this.armLinger();
  }

  private newBatch(): Promise<OpenBatch> {
    this.opening ??= this.withRetry('open a batch', () => this.createBatch()).then(
      (batch) => {
        this.opening = null;
        this.open = { batch, messages: [], records: 0 };
        return this.open;
      },
      (err: unknown) => {
        this.opening = null;
        throw err;
      },
    );
    return this.opening;
  }

  /** A batch of at most min(link maximum, 1 MB). */
  private async createBatch(): Promise<ServiceBusMessageBatch> {
    if (this.linkMax === 0) {
      const probe = await this.sender.createMessageBatch({ abortSignal: this.abort.signal });
      this.linkMax = probe.maxSizeInBytes;
      if (this.linkMax <= MAX_BATCH_BYTES) return probe;
    }
    const options: CreateMessageBatchOptions = { abortSignal: this.abort.signal };
    if (this.linkMax > MAX_BATCH_BYTES) options.maxSizeInBytes = MAX_BATCH_BYTES;
    return this.sender.createMessageBatch(options);
  }

  /** Sends the batch, or its messages one at a time in order to a queue that refuses batches. */
  private async send(open: OpenBatch, timeouts: number): Promise<void> {
    if (open.alone !== undefined || (this.singly && open.batch.count === 1)) {
      await this.sendWithTimeout(open.alone?.message ?? open.messages[0]!, timeouts);
      return;
    }
    if (!this.singly) {
      try {
        await this.sendWithTimeout(open.batch, timeouts);
        return;
      } catch (err) {
        if (!refusesBatches(err)) throw err;
        this.singly = true;
      }
    }
    // A retry of this whole step sends the earlier ones again: the queue's duplicate detection drops them.
    for (const m of open.messages) await this.sendWithTimeout(m, timeouts);
  }

  /** Chains the open batch after the one in flight. Never throws; a failure destroys the sink. */
  private dispatch(): void {
    this.clearLinger();
    this.due = false;
    const open = this.open;
    if (open === null || open.records === 0) return;
    this.open = null;
    this.flying++;
    this.inFlight = this.inFlight.then(async () => {
      if (this.failed) return;
      try {
        if (open.batch.count > 0 || open.alone !== undefined) {
          let timeouts = 0;
          await this.withRetry(open.alone ? 'send a message' : 'send a batch', async () => {
            try {
              await this.send(open, timeouts);
            } catch (err) {
              if (err instanceof SendTimeout) timeouts++;
              throw err;
            }
          });
          this.counts.batches++;
          this.counts.messages += open.alone ? 1 : open.batch.count;
          this.counts.bytes += open.alone?.size ?? open.batch.sizeInBytes;
          this.counts.fill += open.alone ? 1 : open.batch.sizeInBytes / open.batch.maxSizeInBytes;
          this.options.observer?.delivered(this.queue, { records: open.records, fill: open.alone ? 1 : open.batch.sizeInBytes / open.batch.maxSizeInBytes });
        } else {
          this.options.observer?.delivered(this.queue, { records: open.records });
        }
        this.emit('ack', open.records);
      } catch (err) {
        this.failed = err as Error;
        this.destroy(err as Error);
      }
      this.flying--;
      if (this.flying === 0 && this.due && this.failed === null) this.dispatch();
    });
  }

  /**
   * One send, given up after the attempt's wait: the first waits a few times the slowest answer so
   * far (at least `firstSendTimeoutMs`, at most `sendTimeoutMs`), each timed-out one twice the last.
   * A namespace that has answered slower than `sendTimeoutMs` gets twice its slowest answer from
   * the first attempt on: a shorter wait is known to fail, and each send given up is sent again
   * (a duplicate on a queue without duplicate detection).
   */
  private async sendWithTimeout(batch: ServiceBusMessageBatch | ServiceBusMessage, timeoutsSoFar: number): Promise<void> {
    const max = this.options.sendTimeoutMs ?? 30_000;
    // Before any answer the link is still to be opened and authorised: a cold start gets longer.
    const floor = (this.options.firstSendTimeoutMs ?? 2000) * (this.slowestSendMs === 0 ? 5 : 1);
    const first = this.slowestSendMs > max ? 2 * this.slowestSendMs : Math.min(max, Math.max(floor, 4 * this.slowestSendMs));
    const ms = first * 2 ** timeoutsSoFar;
    if (ms > max && !this.warnedSlow) {
      this.warnedSlow = true;
      this.options.onWarning?.(`queue "${this.queue}": Service Bus did not answer a send within send_timeout_ms (${max} ms); waiting up to ${ms} ms now (raise send_timeout_ms if the namespace is this slow)`);
    }
    const timeout = AbortSignal.timeout(ms);
    const started = Date.now();
    try {
      await this.sender.sendMessages(batch, { abortSignal: AbortSignal.any([timeout, this.abort.signal]) });
      this.slowestSendMs = Math.max(this.slowestSendMs, Date.now() - started);
      this.options.observer?.sent(this.queue, (Date.now() - started) / 1000);
    } catch (err) {
      if (timeout.aborted && !this.abort.signal.aborted) throw new SendTimeout(`no answer from Service Bus within ${ms} ms`, err);
      throw err;
    }
  }

  private armLinger(): void {
    if (this.linger !== null || this.due) return;
    this.linger = setTimeout(() => {
      this.linger = null;
      if (this.flying > 0) this.due = true;
      else this.dispatch();
    }, this.lingerMs);
  }

  private clearLinger(): void {
    if (this.linger !== null) {
      clearTimeout(this.linger);
      this.linger = null;
    }
  }

  private withRetry<T>(what: string, op: () => Promise<T>): Promise<T> {
    return retry(
      async () => {
        try {
          return await op();
        } catch (err) {
          if ((err as { code?: unknown }).code !== 'MessagingEntityNotFound' || !this.options.onMissingQueue || this.triedCreating) throw err;
          // Creating the queue is not a failed attempt: once it exists, the same attempt goes on.
          this.triedCreating = true;
          await this.options.onMissingQueue(this.queue);
          return await op();
        }
      },
      {
        ...backoffOf(this.options.retry),
        signal: this.abort.signal,
        classify: (err) => (err instanceof SendTimeout ? true : classify(err)),
        onRetry: ({ attempt, delayMs, error }) => {
          this.counts.retries++;
          this.options.observer?.retried(this.queue, retryKind(error));
          this.options.onRetry?.({ queue: this.queue, attempt, delayMs, error });
        },
        fail: (err, attempts, info) => this.explain(err, what, attemptsText(attempts, info)),
      },
    );
  }

  private explain(err: unknown, what: string, attempts: string): Error {
    if (isDstreamError(err)) return err;
    const code = (err as { code?: unknown }).code;
    const where = `queue "${this.queue}" in ${this.lease.endpoint}`;
    if (code === 'MessagingEntityNotFound') {
      return new DstreamError(ErrorCodes.QUEUE_NOT_FOUND, `${where} does not exist; create it with \`dstream init <task>\`, or set on_missing_queue = "create"`, {
        cause: err,
        details: { queue: this.queue },
      });
    }
    if (code === 'UnauthorizedAccess') {
      return new DstreamError(ErrorCodes.UNAUTHORIZED, `${where}: access refused; the credentials need Send rights on the namespace or queue`, {
        cause: err,
        details: { queue: this.queue },
      });
    }
    const tries = attempts === '' ? '' : ` ${attempts}`;
    return new DstreamError(ErrorCodes.SERVICE_BUS, `could not ${what} to ${where}${tries}: ${messageOf(err)}`, {
      cause: err,
      details: { queue: this.queue, code },
    });
  }
}

/** A Writable of envelopes for one Service Bus queue; emits 'ack' (count) as records become durable. */
export function serviceBusSink(options: ServiceBusSinkOptions): ServiceBusSink {
  return new ServiceBusSink(options);
}

function retryKind(err: unknown): RetryKind {
  if (err instanceof SendTimeout) return 'timeout';
  if (connectionCause(err) !== undefined) return 'connection';
  const verdict = classify(err);
  return typeof verdict === 'object' ? 'throttled' : 'other';
}

/** A send that got no answer in time: the connection may be gone; the sink retries it (no Azure code faked). */
class SendTimeout extends Error {
  constructor(message: string, cause: unknown) {
    super(message, { cause });
    this.name = 'SendTimeout';
  }
}
