#!/usr/bin/env node
import { exitWhenFlushed } from '../lib/cli/exit.js';
import { runProvider } from '../lib/provider/run-provider.js';
import { mssqlCdcSource } from '../lib/sources/mssql/provider.js';

runProvider(mssqlCdcSource).then(exitWhenFlushed);
