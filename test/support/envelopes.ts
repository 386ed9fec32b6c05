/** Envelopes for tests: CDC changes with increasing LSNs, as mssql-cdc emits them. */
import type { Envelope } from '../../lib/index.js';

let lsn = 0;

/** An Insert of `table` with its own LSN (increasing across the test file), Seq 0x01. */
export function cdcChange(table: string, data: Record<string, unknown>, metadata: Record<string, unknown> = {}): Envelope {
  lsn++;
  return {
    source: 'mssql-cdc',
    type: 'cdc',
    data,
    metadata: { TableName: table, Schema: 'dbo', OperationType: 'Insert', OperationID: 2, LSN: `0x${lsn.toString(16).padStart(20, '0')}`, Seq: '0x01', ...metadata },
  };
}
