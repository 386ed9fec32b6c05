/** Config keys of the original providers (the Go MSSQL ingester, the ASB output) on dstream's built-ins. */
import { describe, expect, it } from 'vitest';
import { ExitCodes } from '../../lib/index.js';
import { validateConfig } from '../../lib/config/schema.js';
import { mssqlCdcConfig } from '../../lib/providers/mssql-cdc.js';
import { dstream, taskFile } from './support.js';

// The input config of katasec/dstream's own dstream.hcl (task "mssql-to-asb"), on the built-in mssql-cdc,
// and its ASB output's config on the built-in asb-sink.
const file = (lockConfig: string, poll = '"5s"') => `task "mssql-to-asb" {
  type = "providers"
  input {
    provider = "mssql-cdc"
    config {
      db_connection_string = "server=localhost,1433;user id=sa;password=Passw0rd123;database=TestDB;encrypt=disable"
      poll_interval   = ${poll}
      max_poll_interval = "30s"
      tables = ["Persons", "Cars"]
      lock_config = ${lockConfig}
    }
  }
  output {
    provider = "asb-sink"
    config {
      connectionString = "Endpoint=sb://127.0.0.1:1/;SharedAccessKeyName=k;SharedAccessKey=v"
      resourceGroup    = "rg-dstream-dev"
      tables           = ["dbo.Cars", "dbo.Persons"]
    }
  }
}
`;

describe('config keys of the original providers', () => {
  it('the same meaning: accepted as aliases of dstream\'s keys', async () => {
    const ok = await dstream(['validate', 'mssql-to-asb'], taskFile(file('{\n        type = "none"\n      }')));
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    const c = validateConfig(mssqlCdcConfig, { db_connection_string: 'Server=x', poll_interval: '1m30s', max_poll_interval: '500ms', tables: ['Persons'], lock_config: { type: 'none' } });
    expect(c).toMatchObject({ connection_string: 'Server=x', poll_interval_ms: 90_000, max_poll_interval_ms: 500, lease: false });
  });

  it('a different meaning or a bad value: refused, naming the dstream key', async () => {
    const blob = await dstream(['validate', 'mssql-to-asb'], taskFile(file('{\n        type = "azure_blob"\n        container_name = "locks"\n      }')));
    expect(blob.code).toBe(ExitCodes.USAGE);
    expect(blob.stderr).toMatch(/input\.config\.lock_config: the original ingester's Azure Blob locks are not supported; workers share a task with lease = true \(SQL Server application locks\)/);
    const poll = await dstream(['validate', 'mssql-to-asb'], taskFile(file('{\n        type = "none"\n      }', '"fast"')));
    expect(poll.code).toBe(ExitCodes.USAGE);
    expect(poll.stderr).toMatch(/input\.config\.poll_interval: expected a duration such as "5s" \(or give poll_interval_ms in milliseconds\), got string "fast"/);
    expect(poll.stderr + blob.stderr).not.toContain('Passw0rd123');
  });
});
