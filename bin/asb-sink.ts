#!/usr/bin/env node
import { runProvider } from '../lib/provider/run-provider.js';
import { asbSink } from '../lib/sinks/service-bus/asb-sink.js';

runProvider(asbSink).then((code) => process.exit(code));
