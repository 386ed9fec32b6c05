// Baseline for `dstream run` of the built-in generator into files: the same pipeline composed from
// the library in a script (generateChanges -> toFiles), start-up included.
// node generator-to-files.mjs <count> <dir>   (DSTREAM_ROOT: the checkout to load, default this one)
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { join } from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';

const root = process.env.DSTREAM_ROOT ?? fileURLToPath(new URL('../..', import.meta.url));
const { generateChanges, toFiles } = await import(pathToFileURL(join(root, 'dist/lib/index.js')).href);
const [count, dir] = process.argv.slice(2);
await pipeline(Readable.from(generateChanges({ count: Number(count), seed: 1 })), toFiles({ dir }));
