/**
 * The Service Bus management (ATOM over HTTP) endpoint of the test broker: create, get, list and
 * delete queues with full QueueDescription replies, sharing the broker's queues. Status codes and
 * error shapes follow the service: 201 on create, 409 when the queue exists, 404 when it does not,
 * 503 (ServerBusy) when throttling is injected.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { QueueOptions, QueueState } from './asb-broker.js';

export interface AdminFaults {
  /** Answer the next N management requests with 503 ServerBusy. */
  busyNext?: number;
}

export interface QueueDescription {
  LockDuration: string;
  MaxSizeInMegabytes: string;
  RequiresDuplicateDetection: string;
  RequiresSession: string;
  DefaultMessageTimeToLive: string;
  DeadLetteringOnMessageExpiration: string;
  DuplicateDetectionHistoryTimeWindow: string;
  MaxDeliveryCount: string;
  EnableBatchedOperations: string;
  EnablePartitioning: string;
  UserMetadata?: string;
  [key: string]: string | undefined;
}

const DEFAULTS: QueueDescription = {
  LockDuration: 'PT1M',
  MaxSizeInMegabytes: '1024',
  RequiresDuplicateDetection: 'false',
  RequiresSession: 'false',
  DefaultMessageTimeToLive: 'P10675199DT2H48M5.4775807S',
  DeadLetteringOnMessageExpiration: 'false',
  DuplicateDetectionHistoryTimeWindow: 'PT10M',
  MaxDeliveryCount: '10',
  EnableBatchedOperations: 'true',
  EnablePartitioning: 'false',
};

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const unesc = (s: string) => s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');

export interface AdminHost {
  queues: Map<string, QueueState>;
  createQueue(name: string, options: QueueOptions): QueueState;
  readonly adminFaults: AdminFaults;
  readonly adminRequests: Array<{ method: string; path: string; status: number }>;
  host(): string;
}

function entryXml(host: string, q: QueueState): string {
  const d = { ...DEFAULTS, ...(q.description ?? {}) };
  const now = new Date().toISOString();
  const active = q.messages.length;
  const fields = [
    ['LockDuration', d.LockDuration],
    // A partitioned Standard queue has 16 partitions and reports 16 times the size it was given.
    ['MaxSizeInMegabytes', d.EnablePartitioning === 'true' ? String(Number(d.MaxSizeInMegabytes) * 16) : d.MaxSizeInMegabytes],
    ['RequiresDuplicateDetection', String(q.requiresDuplicateDetection)],
    ['RequiresSession', d.RequiresSession],
    ['DefaultMessageTimeToLive', d.DefaultMessageTimeToLive],
    ['DeadLetteringOnMessageExpiration', d.DeadLetteringOnMessageExpiration],
    ['DuplicateDetectionHistoryTimeWindow', d.DuplicateDetectionHistoryTimeWindow],
    ['MaxDeliveryCount', d.MaxDeliveryCount],
    ['EnableBatchedOperations', d.EnableBatchedOperations],
    ['SizeInBytes', String(q.messages.reduce((n, m) => n + JSON.stringify(m.message.body ?? '').length, 0))],
    ['MessageCount', String(active)],
    ['IsAnonymousAccessible', 'false'],
    ['Status', 'Active'],
    ['CreatedAt', now],
    ['UpdatedAt', now],
    ['AccessedAt', now],
    ['SupportOrdering', 'true'],
  ]
    .map(([k, v]) => `<${k}>${esc(v!)}</${k}>`)
    .join('');
  const counts =
    '<CountDetails xmlns:d2p1="http://schemas.microsoft.com/netservices/2011/06/servicebus">' +
    `<d2p1:ActiveMessageCount>${active}</d2p1:ActiveMessageCount><d2p1:DeadLetterMessageCount>0</d2p1:DeadLetterMessageCount>` +
    '<d2p1:ScheduledMessageCount>0</d2p1:ScheduledMessageCount><d2p1:TransferMessageCount>0</d2p1:TransferMessageCount>' +
    '<d2p1:TransferDeadLetterMessageCount>0</d2p1:TransferDeadLetterMessageCount></CountDetails>';
  const tail =
    `<AutoDeleteOnIdle>P10675199DT2H48M5.4775807S</AutoDeleteOnIdle><EnablePartitioning>${d.EnablePartitioning}</EnablePartitioning>` +
    `<EntityAvailabilityStatus>Available</EntityAvailabilityStatus><EnableExpress>false</EnableExpress>` +
    (d.UserMetadata !== undefined ? `<UserMetadata>${esc(d.UserMetadata)}</UserMetadata>` : '');
  return (
    `<entry xmlns="http://www.w3.org/2005/Atom"><id>https://${host}/${q.name}?api-version=2021-05</id>` +
    `<title type="text">${esc(q.name)}</title><published>${now}</published><updated>${now}</updated>` +
    `<author><name>${esc(host)}</name></author><link rel="self" href="https://${host}/${q.name}?api-version=2021-05"/>` +
    '<content type="application/xml"><QueueDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" ' +
    `xmlns:i="http://www.w3.org/2001/XMLSchema-instance">${fields}${counts}${tail}</QueueDescription></content></entry>`
  );
}

function errorXml(code: number, detail: string): string {
  return `<Error><Code>${code}</Code><Detail>${esc(detail)}</Detail></Error>`;
}

/** Handles one management request against the broker's queues. */
export async function handleAdmin(hostObj: AdminHost, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://x');
  const path = decodeURIComponent(url.pathname.slice(1));
  const body = await new Promise<string>((resolve) => {
    let b = '';
    req.setEncoding('utf8').on('data', (d: string) => (b += d)).on('end', () => resolve(b));
  });
  const send = (status: number, xml: string, type = 'application/xml; charset=utf-8') => {
    hostObj.adminRequests.push({ method: req.method ?? '', path, status });
    res.writeHead(status, { 'content-type': type });
    res.end(xml);
  };
  if (!/^SharedAccessSignature /.test(req.headers.authorization ?? '')) {
    send(401, errorXml(401, 'MissingToken: The authorization header was not found.'));
    return;
  }
  if ((hostObj.adminFaults.busyNext ?? 0) > 0) {
    hostObj.adminFaults.busyNext!--;
    send(503, errorXml(503, 'The server is busy. Please retry the operation.'));
    return;
  }
  const host = hostObj.host();
  if (req.method === 'GET' && path === '$Resources/Queues') {
    const skip = Number(url.searchParams.get('$skip') ?? 0);
    const top = Number(url.searchParams.get('$top') ?? 100);
    const all = [...hostObj.queues.values()].slice(skip, skip + top);
    send(200, `<feed xmlns="http://www.w3.org/2005/Atom"><title type="text">Queues</title><id>https://${host}/$Resources/Queues</id>${all.map((q) => entryXml(host, q)).join('')}</feed>`, 'application/atom+xml; type=feed; charset=utf-8');
    return;
  }
  const existing = hostObj.queues.get(path.toLowerCase());
  if (req.method === 'GET') {
    if (existing === undefined) send(404, errorXml(404, `The messaging entity '${path}' could not be found.`));
    else send(200, entryXml(host, existing), 'application/atom+xml; type=entry; charset=utf-8');
    return;
  }
  if (req.method === 'PUT') {
    const description: Partial<QueueDescription> = {};
    for (const m of body.matchAll(/<(\w+)>([^<]*)<\/\1>/g)) description[m[1]!] = unesc(m[2]!);
    const update = req.headers['if-match'] === '*';
    const invalid = outOfRange(description, existing?.description?.EnablePartitioning === 'true' || description.EnablePartitioning === 'true');
    if (invalid !== undefined) {
      send(400, errorXml(400, `${invalid} To know more visit https://aka.ms/sbResourceMgrExceptions.`));
      return;
    }
    // The service keeps durations in canonical form: PT60S is stored and reported as PT1M.
    for (const k of DURATIONS) if (description[k] !== undefined) description[k] = canonicalDuration(description[k]!);
    // Updates of a partitioned queue come back with the x16 size it reported.
    if (update && existing?.description?.EnablePartitioning === 'true' && description.MaxSizeInMegabytes !== undefined && !STANDARD_SIZES.has(Number(description.MaxSizeInMegabytes))) {
      description.MaxSizeInMegabytes = String(Number(description.MaxSizeInMegabytes) / 16);
    }
    if (update) {
      // An update: the queue must exist; properties fixed at creation keep their values.
      if (existing === undefined) {
        send(404, errorXml(404, `The messaging entity '${path}' could not be found.`));
        return;
      }
      const { RequiresDuplicateDetection: _d, RequiresSession: _s, EnablePartitioning: _p, ...mutable } = description;
      existing.description = { ...existing.description, ...mutable };
      send(200, entryXml(host, existing), 'application/atom+xml; type=entry; charset=utf-8');
      return;
    }
    if (existing !== undefined) {
      send(409, errorXml(409, `The messaging entity '${path}' already exists. SubCode=40900`));
      return;
    }
    const q = hostObj.createQueue(path, {
      requiresDuplicateDetection: description.RequiresDuplicateDetection === 'true',
      enablePartitioning: description.EnablePartitioning === 'true',
      requiresSession: description.RequiresSession === 'true',
      duplicateWindowMs: durationMs(description.DuplicateDetectionHistoryTimeWindow ?? DEFAULTS.DuplicateDetectionHistoryTimeWindow),
    });
    q.description = description;
    send(201, entryXml(host, q), 'application/atom+xml; type=entry; charset=utf-8');
    return;
  }
  if (req.method === 'DELETE') {
    if (existing === undefined) send(404, errorXml(404, `The messaging entity '${path}' could not be found.`));
    else {
      hostObj.queues.delete(path.toLowerCase());
      send(200, '');
    }
    return;
  }
  send(405, errorXml(405, `method ${req.method} not supported`));
}

// ===== What the service accepts (Service Bus quotas; written from its documentation) ============

const DURATIONS = ['LockDuration', 'DefaultMessageTimeToLive', 'DuplicateDetectionHistoryTimeWindow', 'AutoDeleteOnIdle'] as const;
/** Standard tier queue sizes in MB (Premium adds larger ones, up to 80 GB). */
const STANDARD_SIZES = new Set([1024, 2048, 3072, 4096, 5120]);
const PREMIUM_SIZES = new Set([10240, 20480, 40960, 81920]);
const SECOND = 1000;
const DAY = 86_400 * SECOND;

/** ISO-8601 duration (as XmlConvert reads a TimeSpan) to milliseconds; NaN when it is not one. */
export function durationMs(text: string): number {
  const m = /^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$/.exec(text);
  if (m === null || text === 'P' || text.endsWith('T')) return Number.NaN;
  const [, d, h, min, sec] = m;
  return Math.round(((Number(d ?? 0) * 24 + Number(h ?? 0)) * 60 + Number(min ?? 0)) * 60 * SECOND + Number(sec ?? 0) * SECOND);
}

/** The canonical text of a duration, as the service reports it: PT60S -> PT1M, PT24H -> P1D. */
export function canonicalDuration(text: string): string {
  const ms = durationMs(text);
  if (Number.isNaN(ms) || ms > 10675199 * DAY) return text;
  let rest = ms;
  const d = Math.floor(rest / DAY);
  rest -= d * DAY;
  const h = Math.floor(rest / 3_600_000);
  rest -= h * 3_600_000;
  const min = Math.floor(rest / 60_000);
  rest -= min * 60_000;
  const sec = rest / SECOND;
  const time = `${h ? `${h}H` : ''}${min ? `${min}M` : ''}${sec ? `${sec}S` : ''}`;
  return `P${d ? `${d}D` : ''}${time ? `T${time}` : d ? '' : 'T0S'}`;
}

/** Why the service would refuse these queue properties, or undefined. */
function outOfRange(d: Partial<QueueDescription>, partitioned: boolean): string | undefined {
  if (d.MaxSizeInMegabytes !== undefined) {
    const mb = Number(d.MaxSizeInMegabytes);
    const ok = STANDARD_SIZES.has(mb) || PREMIUM_SIZES.has(mb) || (partitioned && STANDARD_SIZES.has(mb / 16));
    if (!ok) return `The specified value ${d.MaxSizeInMegabytes} is invalid. The property MaxSizeInMegabytes, must be one of the following values: 1024;2048;3072;4096;5120.`;
  }
  for (const k of DURATIONS) {
    if (d[k] !== undefined && Number.isNaN(durationMs(d[k]!))) return `The value '${d[k]}' of ${k} is not a valid duration.`;
  }
  if (d.LockDuration !== undefined && (durationMs(d.LockDuration) < 5 * SECOND || durationMs(d.LockDuration) > 5 * 60 * SECOND)) {
    return `The supplied lock time exceeds the allowed maximum of '00:05:00' or is below the minimum of '00:00:05'.`;
  }
  if (d.DuplicateDetectionHistoryTimeWindow !== undefined) {
    const ms = durationMs(d.DuplicateDetectionHistoryTimeWindow);
    if (ms < 20 * SECOND || ms > 7 * DAY) return `The value supplied for DuplicateDetectionHistoryTimeWindow must be between '00:00:20' and '7.00:00:00'.`;
  }
  if (d.MaxDeliveryCount !== undefined && !(Number(d.MaxDeliveryCount) >= 1)) return 'MaxDeliveryCount must be at least 1.';
  return undefined;
}
