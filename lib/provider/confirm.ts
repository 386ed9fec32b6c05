/**
 * The one rule of every destructive verb (dstream destroy and reset, a provider's standalone
 * destroy): say what will be removed, then go on only with --yes, or with the name typed back on
 * a terminal. Without either nothing is touched and the exit code is 2.
 */
import { createInterface } from 'node:readline/promises';
import type { Readable, Writable } from 'node:stream';
import { invalidOption } from '../errors.js';
import type { Logger } from '../log.js';

export interface ConfirmIO {
  stdin: Readable & { isTTY?: boolean };
  stderr: Writable;
  /** With --log-format json, the list is one log record (the question, on a terminal, stays text). */
  log?: Logger;
}

export interface Removal {
  /** Who asks: `dstream`, `asb-sink`. */
  program: string;
  /** What is done: `destroy task "demo"`. */
  action: string;
  /** One line per thing removed; empty when nothing exists now. */
  items: string[];
  /** What to type to confirm. */
  name: string;
  yes: boolean;
}

export async function confirmRemoval(io: ConfirmIO, r: Removal): Promise<void> {
  if (io.log?.format === 'json') io.log.warn(r.items.length === 0 ? `${r.action}: nothing to remove was found` : `${r.action} removes: ${r.items.join('; ')}`);
  else io.stderr.write(r.items.length === 0 ? `${r.program}: ${r.action}: nothing to remove was found\n` : `${r.program}: ${r.action} removes:\n${r.items.map((i) => `  - ${i}\n`).join('')}`);
  if (r.yes) return;
  if (!io.stdin.isTTY) throw invalidOption(`${r.action}: not confirmed, nothing removed; pass --yes (or run it on a terminal and type ${JSON.stringify(r.name)})`);
  const rl = createInterface({ input: io.stdin, output: io.stderr });
  try {
    const answer = (await rl.question(`Type ${JSON.stringify(r.name)} to confirm: `)).trim();
    if (answer !== r.name) throw invalidOption(`${r.action}: not confirmed (typed ${JSON.stringify(answer)}), nothing removed`);
  } finally {
    rl.close();
  }
}
