/**
 * A SQL Server for tests: the CDC model behind its T-SQL front (tds/cdc-backend.ts) behind the TDS
 * wire (tds/server.ts), listening on 127.0.0.1 on an ephemeral port. dstream reaches it with a
 * connection string through the real `mssql`/tedious driver; the test drives `model` directly for
 * what happens on the server side.
 */
import { shopModel, type CdcModel } from './cdc-model.js';
import { CdcBackend } from './tds/cdc-backend.js';
import { startTdsServer, type TdsServer } from './tds/server.js';

export const SQL_USER = 'dstream';
export const SQL_PASSWORD = 'Str0ng-Passw0rd';

export interface TestSqlServer {
  /** What a user would give dstream: Server=127.0.0.1,<port>;Database=...;User Id=...;Password=...;Encrypt=false */
  connectionString: string;
  /** The same server, another database or password. */
  connectionStringFor(o: { database?: string; password?: string }): string;
  server: TdsServer;
  model: CdcModel;
  host: string;
  port: number;
  /** Stop listening: connections are refused (ECONNREFUSED) and open ones reset, until up(). */
  down(): Promise<void>;
  /** Listen again on the same port. */
  up(): Promise<void>;
  close(): Promise<void>;
}

export async function startSqlServer(model: CdcModel = shopModel()): Promise<TestSqlServer> {
  const server = await startTdsServer({ backend: new CdcBackend(model) });
  model.connections = server;
  const host = server.host;
  const port = server.port;
  let listening = true;
  const connectionStringFor = (o: { database?: string; password?: string }) =>
    server.connectionString({ database: o.database ?? model.database, user: SQL_USER, password: o.password ?? SQL_PASSWORD });
  return {
    connectionString: connectionStringFor({}),
    connectionStringFor,
    server,
    model,
    host,
    port,
    async down() {
      if (!listening) return;
      listening = false;
      await server.close();
    },
    async up() {
      if (listening) return;
      await server.listen(port, host);
      listening = true;
    },
    async close() {
      model.connections = undefined;
      if (listening) await server.close();
      listening = false;
    },
  };
}

/** startSqlServer() closed when the current test finishes. */
export async function sqlServerForTest(model: CdcModel = shopModel()): Promise<TestSqlServer> {
  // Imported here so that benchmarks can start a server without vitest.
  const { onTestFinished } = await import('vitest');
  const db = await startSqlServer(model);
  onTestFinished(() => db.close());
  return db;
}
