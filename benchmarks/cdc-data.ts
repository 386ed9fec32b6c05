/**
 * Realistic CDC envelopes for benchmarks: five tables with the column mixes of an order system,
 * 300-450 bytes per line, a checkpoint after each transaction of 1-5 rows. Deterministic (seeded).
 */
import { createWriteStream, existsSync, mkdirSync, renameSync } from 'node:fs';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

export const DATA_DIR = fileURLToPath(new URL('./.data/', import.meta.url));

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FIRST = ['Ada', 'Grace', 'Edsger', 'Barbara', 'Ken', 'Zoë', 'Jürgen', 'Tomás', 'Aiko', 'Olu'];
const LAST = ['Lovelace', 'Hopper', 'Dijkstra', 'Liskov', 'Thompson', 'Ünal', 'Schmidt', 'Rivera', 'Tanaka', 'Adeyemi'];
const CITIES = ['Wellington', 'München', 'São Paulo', 'Osaka', 'Lagos', 'Seattle'];
const OPS = [
  ['Insert', 2],
  ['Update', 4],
  ['Delete', 1],
] as const;

export function* cdcEnvelopes(count: number, seed = 42): Generator<Record<string, unknown>> {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  let lsn = 0x2700000000n;
  let emitted = 0;
  let t = Date.UTC(2026, 10, 26, 8, 0, 0);
  while (emitted < count) {
    lsn += 0x10n;
    t += Math.floor(r() * 50);
    const commit = new Date(t).toISOString();
    const rows = 1 + Math.floor(r() * 5);
    for (let seq = 1; seq <= rows && emitted < count; seq++) {
      const table = pick(['Persons', 'Orders', 'Customers', 'OrderLines', 'Products'] as const);
      const [op, opId] = r() < 0.6 ? OPS[0] : r() < 0.8 ? OPS[1] : OPS[2];
      const id = Math.floor(r() * 1_000_000);
      let data: Record<string, unknown>;
      switch (table) {
        case 'Persons':
          data = { PersonId: id, FirstName: pick(FIRST), LastName: pick(LAST), Email: `user${id}@example.com`, City: pick(CITIES), Active: r() < 0.9 };
          break;
        case 'Orders':
          data = { OrderId: id, CustomerId: Math.floor(r() * 50_000), Total: (r() * 5000).toFixed(2), Currency: 'NZD', Status: pick(['new', 'paid', 'shipped']), PlacedAt: commit };
          break;
        case 'Customers':
          data = { CustomerId: id, Company: pick(['Contoso Ltd', 'Fabrikam, Inc.', 'Northwind Traders']), Country: pick(['NZ', 'DE', 'BR', 'JP']), CreditLimit: (r() * 1e5).toFixed(2), Notes: null };
          break;
        case 'OrderLines':
          data = { OrderLineId: id, OrderId: Math.floor(r() * 1e6), ProductId: Math.floor(r() * 1e4), Quantity: 1 + Math.floor(r() * 9), UnitPrice: (r() * 300).toFixed(4) };
          break;
        default:
          data = { ProductId: id, Sku: `SKU-${id.toString(36).toUpperCase()}`, Name: `${pick(FIRST)} widget`, Price: (r() * 300).toFixed(2), Weight: Math.round(r() * 1e4) / 100 };
      }
      emitted++;
      yield {
        source: 'mssql-cdc',
        type: 'cdc',
        data,
        metadata: {
          TableName: table,
          Schema: 'dbo',
          Database: 'shop',
          OperationType: op,
          OperationID: opId,
          LSN: `0x${lsn.toString(16).padStart(20, '0')}`,
          Seq: `0x${seq.toString(16).padStart(20, '0')}`,
          CommitTime: commit,
        },
      };
    }
    if (emitted < count) {
      emitted++;
      yield { source: 'mssql-cdc', type: 'checkpoint', data: { position: { lsn: `0x${lsn.toString(16).padStart(20, '0')}` } }, metadata: {} };
    }
  }
}

/** The path of an NDJSON file of `count` envelopes, written once and reused. */
export async function cdcFile(count: number): Promise<string> {
  mkdirSync(DATA_DIR, { recursive: true });
  const path = `${DATA_DIR}cdc-${count}.ndjson`;
  if (existsSync(path)) return path;
  const tmp = `${path}.tmp`;
  const out = createWriteStream(tmp);
  let buf = '';
  for (const e of cdcEnvelopes(count)) {
    buf += `${JSON.stringify(e)}\n`;
    if (buf.length > 1 << 20) {
      if (!out.write(buf)) await once(out, 'drain');
      buf = '';
    }
  }
  out.end(buf);
  await once(out, 'finish');
  renameSync(tmp, path);
  return path;
}
