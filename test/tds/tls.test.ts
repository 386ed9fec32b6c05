/**
 * TLS on the TDS test server through the real mssql/tedious client: `Encrypt=true` (the TDS 7.x
 * handshake inside PRELOGIN packets) and `encrypt: 'strict'` (TDS 8.0, TLS first), with a
 * self-signed certificate made at test time, so the driver's untrusted-certificate failure is real.
 */
import { once } from 'node:events';
import mssql from 'mssql';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTdsServer, type TdsServer } from '../support/tds/server.js';
import { selfSignedCertificate, type Certificate } from '../support/tds/tls.js';
import type { TdsBackend } from '../support/tds/types.js';

const made = selfSignedCertificate();
const missing = 'missing' in made ? made.missing : undefined;

const backend: TdsBackend = {
  login: (_user, password, database) => {
    if (password !== 'pw') throw new Error('unexpected password');
    return { database: database ?? 'master' };
  },
  async *execute(sql) {
    if (/^\s*set\s/i.test(sql)) return;
    yield { columns: [{ name: 'sql', type: { name: 'nvarchar', length: 4000 } }], rows: [[sql]] };
  },
};

let server: TdsServer;
const pools: mssql.ConnectionPool[] = [];

async function connect(options: mssql.config['options'], extra = ''): Promise<mssql.ConnectionPool> {
  const parsed = mssql.ConnectionPool.parseConnectionString(server.connectionString({ user: 'u', password: 'pw' }).replace('Encrypt=false;TrustServerCertificate=true', extra));
  const pool = new mssql.ConnectionPool({ ...parsed, connectionTimeout: 5000, options: { ...parsed.options, ...options } });
  pools.push(pool);
  await pool.connect();
  return pool;
}

describe.skipIf(missing !== undefined)(`TLS${missing ? ` (skipped: ${missing})` : ''}`, () => {
  beforeAll(async () => {
    server = await startTdsServer({ backend, certificate: made as Certificate });
  });
  afterEach(async () => {
    await Promise.all(pools.splice(0).map((p) => p.close().catch(() => undefined)));
  });
  afterAll(async () => {
    await server?.close();
  });

  it('Encrypt=true with TrustServerCertificate=true: TLS 1.2 negotiated inside PRELOGIN, then queries run encrypted', async () => {
    const secure = once(server, 'secure');
    const pool = await connect({}, 'Encrypt=true;TrustServerCertificate=true');
    const [info] = (await secure) as [{ protocol: string; mode: string }];
    expect(info).toMatchObject({ protocol: 'TLSv1.2', mode: 'prelogin' });
    const r = await pool.request().input('x', mssql.NVarChar(20), 'über').query('select @x');
    expect(r.recordset).toEqual([{ sql: 'select @x' }]);
  });

  it("Encrypt=true against a self-signed certificate: the driver refuses it as untrusted", async () => {
    const err = await connect({}, 'Encrypt=true;TrustServerCertificate=false').then(
      () => new Error('connected'),
      (e: Error & { code?: string }) => e,
    );
    expect((err as Error & { code?: string }).code).toBe('ESOCKET');
    expect(err.message).toMatch(/self[- ]signed certificate/);
  });

  it("encrypt: 'strict' (TDS 8.0): TLS first with ALPN tds/8.0; trusted through the CA, refused without it", async () => {
    const secure = once(server, 'secure');
    const pool = await connect({ encrypt: 'strict' as unknown as boolean, cryptoCredentialsDetails: { ca: (made as Certificate).cert } }, '');
    const [info] = (await secure) as [{ alpn: string; mode: string }];
    expect(info).toMatchObject({ alpn: 'tds/8.0', mode: 'strict' });
    expect((await pool.request().query('select 1')).recordset).toEqual([{ sql: 'select 1' }]);

    const err = await connect({ encrypt: 'strict' as unknown as boolean }, '').then(() => new Error('connected'), (e: Error) => e);
    expect(err.message).toMatch(/self[- ]signed certificate/);
  });
});
