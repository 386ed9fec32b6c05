#!/usr/bin/env node
// A dstream output provider in a dozen lines: counts rows per table and acknowledges each
// checkpoint. Run by `dstream run`, or by hand:
//   (echo '{"command":"run","config":{"label":"demo"}}'; cat examples/data/changes.ndjson) | node examples/count-provider.mjs
import { runProvider } from 'dstream';

process.exitCode = await runProvider({
  name: 'count-provider',
  config: { label: { type: 'string', default: 'rows', description: 'prefix of the summary line' } },
  async run({ input, output, config, log }) {
    const perTable = {};
    for await (const envelope of input) {
      if (envelope.type === 'checkpoint') output.write(envelope); // acknowledge: all before it is counted
      else perTable[envelope.metadata.TableName] = (perTable[envelope.metadata.TableName] ?? 0) + 1;
    }
    log(`${config.label}: ${JSON.stringify(perTable)}`);
  },
});
