#!/usr/bin/env node
import { exitWhenFlushed } from '../lib/cli/exit.js';
import { runProvider } from '../lib/provider/run-provider.js';
import { mssqlCdcSource } from '../lib/providers/mssql-cdc.js';

runProvider(mssqlCdcSource).then(exitWhenFlushed);
