#!/usr/bin/env node
import { runProvider } from '../lib/provider/run-provider.js';
import { mssqlCdcSource } from '../lib/sources/mssql/provider.js';

runProvider(mssqlCdcSource).then((code) => process.exit(code));
