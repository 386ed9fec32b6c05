/**
 * The Service Bus management (ATOM over HTTP) endpoint of the test broker: create, get, list and
 * delete queues with full QueueDescription replies, sharing the broker's queues. Status codes and
 * error shapes follow the service: 201 on create, 409 when the queue exists, 404 when it does not,
 * 503 (ServerBusy) when throttling is injected.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { QueueState } from './asb-broker.js';

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
  createQueue(name: string, options: { requiresDuplicateDetection?: boolean }): QueueState;
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
    ['MaxSizeInMegabytes', d.MaxSizeInMegabytes],
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
    const q = hostObj.createQueue(path, { requiresDuplicateDetection: description.RequiresDuplicateDetection === 'true' });
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
