import type { Envelope } from '../../lib/index.js';

let lsn = 0;
/** A CDC insert of `table` with a fresh LSN (so a fresh MessageId) each call. */
export function change(table: string, n: number, extra: Record<string, unknown> = {}, options: { name?: boolean; destination?: boolean } = {}): Envelope {
  lsn++;
  return {
    source: 'mssql-cdc',
    type: 'cdc',
    data: { Id: n, ...(options.name === false ? {} : { Name: `row ${n}` }), ...extra },
    metadata: {
      TableName: table,
      Schema: 'dbo',
      OperationType: 'Insert',
      OperationID: 2,
      LSN: `0x${lsn.toString(16).padStart(20, '0')}`,
      Seq: '0x01',
      ...(options.destination === false ? {} : { Destination: `${table}_cdc_events` }),
    },
  };
}
