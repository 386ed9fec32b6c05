/**
 * dstream's own version, read from dstream's package.json (found from this file, in lib/ or in
 * dist/lib/), never from the working directory's: `dstream --version` inside a user's project
 * must not print that project's version.
 */
import { readFileSync } from 'node:fs';

let cached: string | undefined;

export function dstreamVersion(): string {
  if (cached !== undefined) return cached;
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'dstream' && typeof pkg.version === 'string') return (cached = pkg.version);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  throw new Error('dstream: its own package.json is missing from the installation');
}
