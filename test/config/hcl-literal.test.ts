import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from '@cdktn/hcl2json';
import { parseLiteralHcl } from '../../lib/config/hcl-literal.js';
import { parseTaskFile } from '../../lib/config/tasks.js';
import { renderTemplate } from '../../lib/config/template.js';

/** What HCL's own parser (Go in WebAssembly) makes of the text, or its error. */
async function full(text: string): Promise<unknown> {
  try {
    return await parse('t.hcl', text);
  } catch (err) {
    return { error: (err as Error).message };
  }
}

const LITERAL: Record<string, string> = {
  'blocks, labels, attributes': `task "bench" {\n  type = "providers"\n  input {\n    provider = "generator"\n    config {\n      count = 200000\n      seed = 1\n    }\n  }\n  output {\n    provider = "files"\n    config {\n      dir = "/tmp/out"\n    }\n  }\n}\n`,
  'values of every literal kind': `task "t" {\n  input {\n    config {\n      z = 1.50\n      neg = -3\n      zero = -0\n      small = 0.125\n      yes = true\n      no = false\n      none = null\n      s = "a\\"b\\\\c\\n\\t\\u00e9 $ % { } ü"\n      list = ["x", 1,\n        2,]\n      empty = []\n      objs = [{ a = 1 }, { "b c" = "d", e: [] }]\n      obj = { b = 1, a = "x"\n        c: { y = 2, x = 1 } }\n    }\n  }\n}\n`,
  'comments of each kind': `# a comment\n// another\ntask "t" { # after a brace\n  type = "providers" // after a value\n  /* a block comment */ input {\n  }\n}\n# at the end`,
  'one-line and empty blocks': `task "t" {\n  input { provider = "generator" }\n  output {}\n  state { dir = "x" }\n}\n`,
  'repeated blocks, two labels, bare labels': `task "a" {\n  input {\n  }\n  input {\n    x = 1\n  }\n}\ntask b {\n}\nother "a" "b" {\n  z = 1\n}\nother "a" "c" {\n  z = 2\n}\n`,
  'keys sorted as the parser sorts them': `task "t" {\n  b = 1\n  a = 2\n  B = 3\n  _c = 4\n  "10" = 5\n}\n`.replace('"10" = 5', 'k-1 = 5'),
  'CRLF line ends': 'task "t" {\r\n  input {\r\n    x = "y"\r\n  }\r\n}\r\n',
  'an empty file': '',
  'only comments': '# nothing\n',
};

const NOT_LITERAL: Record<string, string> = {
  'a template': 'x = "a${b}"\n',
  'an escaped template': 'x = "a$${b}"\n',
  'a directive': 'x = "%{ if true }y%{ endif }"\n',
  'a reference': 'x = local.y\n',
  'a function call': 'x = upper("a")\n',
  'an operator': 'x = 1 + 2\n',
  'a heredoc': 'x = <<EOT\nhello\nEOT\n',
  'an exponent': 'x = 1e3\n',
  'two attributes on one line': 'x = 1 y = 2\n',
  'a duplicate attribute': 'x = 1\nx = 2\n',
  'a block and an attribute of one name': 'x = 1\nx {\n}\n',
  'an attribute before a closing brace': 'task "t" {\n  x = 1 }\n',
  'a list without commas': 'x = [1 2]\n',
  'an unclosed block': 'task "t" {\n',
  'a stray brace': '}\n',
  'an unterminated string': 'x = "abc\n',
  'a one-line block with two attributes': 'task "t" { a = 1, b = 2 }\n',
  'a multi-line block comment': '/* one\ntwo */\nx = 1\n',
  'a lone surrogate escape': 'x = "\\ud800"\n',
};

describe('task files of literals, read without the HCL parser', () => {
  for (const [what, text] of Object.entries(LITERAL)) {
    it(`${what}: the same as HCL's own parser`, async () => {
      const fast = parseLiteralHcl(text);
      expect(fast).toBeDefined();
      expect(JSON.stringify(fast)).toBe(JSON.stringify(await full(text)));
    });
  }

  for (const [what, text] of Object.entries(NOT_LITERAL)) {
    it(`${what}: left to HCL's own parser`, () => {
      expect(parseLiteralHcl(text)).toBeUndefined();
    });
  }

  it('the example task files are literals once rendered, and read the same as with the parser', async () => {
    const dir = join(__dirname, '../../examples');
    const files = readdirSync(dir).filter((f) => f.endsWith('.hcl'));
    expect(files.length).toBeGreaterThan(0);
    const env = new Proxy({}, { get: (_t, k) => (typeof k === 'string' ? `value-of-${k}` : undefined), has: () => true }) as Record<string, string>;
    for (const f of files) {
      const text = renderTemplate(readFileSync(join(dir, f), 'utf8'), env, f);
      const fast = parseLiteralHcl(text);
      expect(fast, f).toBeDefined();
      expect(JSON.stringify(fast), f).toBe(JSON.stringify(await full(text)));
    }
  });

  it('a syntax error still comes from the parser, with its position', async () => {
    await expect(parseTaskFile('task "t" {\n  input {\n    x = = 1\n  }\n}\n', 'dstream.hcl', {})).rejects.toThrow(/dstream\.hcl:3/);
  });
});
