#!/usr/bin/env node
import { exitWhenFlushed } from '../lib/cli/exit.js';
import { runProvider } from '../lib/provider/run-provider.js';
import { asbSink } from '../lib/providers/asb-sink.js';

runProvider(asbSink).then(exitWhenFlushed);
