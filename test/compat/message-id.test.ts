/**
 * MessageIds across producers: the original Go ingester writes LSN and Seq as lower-case hex
 * without prefix, mssql-cdc as 0x + upper-case hex. A task that moves from one to the other
 * re-sends the overlap; Service Bus duplicate detection drops it only if both give the same ids.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ExitCodes } from '../../lib/index.js';
import { useBroker } from '../support/use-broker.js';
import { ndjson, ROOT, spawnNode } from '../support/process.js';
import { compatFixture, dstream, sigtermOnStderr, taskFile } from './support.js';

const broker = useBroker((b) => b.createQueue('Persons_cdc_events', { requiresDuplicateDetection: true }));

// The Go fake's changes for table Persons, as mssql-cdc writes the same rows.
const hex10 = (n: number) => n.toString(16).padStart(20, '0').toUpperCase();
const asMssqlCdc = (i: number) => ({
  source: 'mssql-cdc',
  type: 'cdc',
  data: { Id: i, Name: `name ${i}` },
  metadata: { TableName: 'Persons', Schema: 'dbo', Database: 'TestDB', OperationType: 'Insert', OperationID: 2, LSN: `0x${hex10(0x27_0000_01a0 + i * 0x10)}`, Seq: `0x${hex10(i * 0x1b)}` },
});

describe('MessageIds are the same for the Go ingester and mssql-cdc', () => {
  it('the overlap after switching producers is dropped by duplicate detection; mssql-cdc ids are unchanged', async () => {
    const t = taskFile(`task "t" {
  input {
    provider_path = "${compatFixture('go-ingester.mjs')}"
    config {
      db_connection_string = "server=localhost;database=TestDB"
      poll_interval = "5s"
      max_poll_interval = "30s"
      tables = ["Persons"]
    }
  }
  output {
    provider = "asb-sink"
    config {
      connection_string = "${broker().connectionString}"
      progress_ms = 0
    }
  }
}
`);
    const run = await dstream(['run', 't'], t, { FAKE_CDC_ROWS: '3' }, 25_000, sigtermOnStderr(/publishing\.\.\. table=Persons/));
    expect(run.code, run.stderr).toBe(ExitCodes.TERMINATED);
    expect(broker().queue('Persons_cdc_events')!.messages).toHaveLength(3);
    // The same three changes again, from mssql-cdc, through asb-sink as a pipe would run it.
    const again = await spawnNode(join(ROOT, 'dist/bin/asb-sink.js'), [], {
      input: ndjson({ command: 'run', config: { connection_string: broker().connectionString, progress_ms: 0, quiet: true }, protocol: 1 }, asMssqlCdc(1), asMssqlCdc(2), asMssqlCdc(3)),
    });
    expect(again.code, again.stderr).toBe(0);
    const q = broker().queue('Persons_cdc_events')!;
    expect(q.duplicatesDropped).toBe(3);
    expect(q.messages).toHaveLength(3);
    // Today's ids for mssql-cdc's format: SHA-1 of destination, LSN, Seq and OperationID as written.
    const m = asMssqlCdc(1).metadata;
    const today = createHash('sha1').update(`persons_cdc_events|${m.LSN}|${m.Seq}|2`).digest('hex');
    expect(q.messages.map((s) => s.message.message_id)).toContain(today);
  });
});
