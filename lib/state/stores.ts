/** The state store a task asks for (`state { store = ... }`); the file store by default. */
import type { StateConfig } from '../config/tasks.js';
import { FileStateStore, defaultStateDir, type StateStore } from './state-store.js';

export async function openStateStore(state: StateConfig | undefined, env: Record<string, string | undefined> = process.env): Promise<StateStore> {
  if (state === undefined || state.store === 'file') return new FileStateStore(state?.dir ?? defaultStateDir(env));
  // Loaded only for tasks that keep their position in SQL Server.
  const [{ SqlCheckpointStore, DEFAULT_CHECKPOINT_TABLE }, { sqlServerConnector }] = await Promise.all([
    import('./sql-store.js'),
    import('../sources/mssql/sqlserver.js'),
  ]);
  return new SqlCheckpointStore(sqlServerConnector(state.connection_string!), state.table ?? DEFAULT_CHECKPOINT_TABLE);
}
