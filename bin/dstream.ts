#!/usr/bin/env node
import { exitWhenFlushed } from '../lib/cli/exit.js';
import { main } from '../lib/cli/main.js';

main(process.argv.slice(2)).then(exitWhenFlushed);
