/**
 * `dstream/mssql`: the SQL Server CDC source beyond `mssqlCdc()` (which `dstream` exports): its
 * provider, positions, the SQL Server checkpoint store and the connector. SQL text, LSN helpers and
 * type mapping stay internal.
 */
export { mssqlCdc, MSSQL_SOURCE, type GapPolicy, type LeaseOptions, type MssqlCdcOptions } from './reader.js';
export { parsePosition, positionOf, type MssqlCdcPosition } from './position.js';
export { mssqlCdcProvider, mssqlCdcSource, type MssqlCdcConfig } from '../../providers/mssql-cdc.js';
export { sqlServerConnector, describeConnection } from './sqlserver.js';
export { SqlCheckpointStore, DEFAULT_CHECKPOINT_TABLE } from '../../state/sql-store.js';
export type { CdcConnector, CdcQueries, CaptureInstance, ChangeReadOptions, ConnectOptions, DriverChangeRow, QueryMode, WindowRows } from './queries.js';
