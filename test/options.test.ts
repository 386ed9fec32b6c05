/** Factory options are checked at construction (issue 13, point 9), as plain JavaScript would pass them. */
import { describe, expect, it } from 'vitest';
import { decodeEnvelopes, encodeEnvelopes, ErrorCodes, partitionByTable, route, toFiles, toServiceBus } from '../lib/index.js';

const build = (f: () => unknown) => {
  try {
    f();
  } catch (err) {
    return err as { code: string; message: string };
  }
  throw new Error('constructed without complaint');
};
// Plain JavaScript: no types to stop any of these.
const js = (v: unknown) => v as never;

describe('factory options', () => {
  it('a misspelt option is an error with a did-you-mean, not ignored', () => {
    expect(build(() => route(js({ templte: '{table}' })))).toMatchObject({ code: ErrorCodes.INVALID_OPTION, message: 'route(): unknown option "templte"; did you mean "template"?' });
    expect(build(() => decodeEnvelopes(js({ oninvalid: 'skip' })))).toMatchObject({ code: ErrorCodes.INVALID_OPTION, message: 'decodeEnvelopes(): unknown option "oninvalid"; did you mean "onInvalid"?' });
    expect(build(() => toServiceBus(js({ conectionString: 'x' })))).toMatchObject({ message: 'toServiceBus(): unknown option "conectionString"; did you mean "connectionString"?' });
  });

  it('a value of the wrong type names the option instead of a TypeError later', () => {
    expect(build(() => route(js({ template: 42 })))).toMatchObject({ code: ErrorCodes.INVALID_OPTION, message: 'route(): option "template" must be a string, got number 42' });
    expect(build(() => encodeEnvelopes(js({ chunkBytes: '64k' })))).toMatchObject({ message: 'encodeEnvelopes(): option "chunkBytes" must be a number, got string "64k"' });
    expect(build(() => decodeEnvelopes(js({ onInvalid: 'drop' })))).toMatchObject({ message: 'decodeEnvelopes(): option "onInvalid" must be one of "fail", "skip", "dead-letter", got "drop"' });
  });

  it('missing required options say what they are for', () => {
    expect(build(() => toFiles(js(undefined)))).toMatchObject({ code: ErrorCodes.INVALID_OPTION, message: 'toFiles() takes an options object with dir; got nothing' });
    expect(build(() => toFiles(js({})))).toMatchObject({ message: 'toFiles(): option "dir" is required (the directory of the files)' });
    expect(build(() => partitionByTable(js({})))).toMatchObject({ message: 'partitionByTable(): option "sinkFor" is required ((destination) => Writable)' });
  });

  it('valid options still construct', () => {
    expect(() => route({ template: '{schema}.{table}', include: ['Persons'] })).not.toThrow();
    expect(() => decodeEnvelopes()).not.toThrow();
    expect(() => decodeEnvelopes({ onInvalid: 'skip', maxLineBytes: 1024 })).not.toThrow();
  });
});
