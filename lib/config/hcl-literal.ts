/**
 * Task files in HCL's literal subset, read without the full HCL parser: blocks (with quoted or bare
 * labels), attributes, and literal values (strings without templates, numbers, true/false/null,
 * lists and objects of those), with #, // and one-line /* *\/ comments. That covers the task files
 * dstream documents, and saves the start-up of the full parser (Go in WebAssembly, ~100 MB, most of
 * `dstream validate`'s time).
 *
 * The result is the full parser's (@cdktn/hcl2json): a block becomes an array of bodies under its
 * name (and under each label in turn), keys in sorted order. Anything outside the subset --
 * templates (${...}, %{...}), heredocs, references, function calls, operators, a duplicate
 * attribute, or a syntax error -- returns undefined, and the full parser reads the file instead, so
 * its answers and its error messages (with their positions) are the only ones a user ever sees.
 */

type Value = string | number | boolean | null | Value[] | { [key: string]: Value };
type Body = Record<string, unknown>;

/** Thrown inside: the text is not in the subset. */
class Unsupported extends Error {}


const IDENT = /[A-Za-z_][A-Za-z0-9_-]*/y;
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?![0-9A-Za-z_.])/y;

export function parseLiteralHcl(text: string): Record<string, unknown> | undefined {
  try {
    return new Reader(text).document();
  } catch (err) {
    if (err instanceof Unsupported) return undefined;
    throw err;
  }
}

class Reader {
  private i = 0;

  constructor(private readonly s: string) {}

  document(): Body {
    const body = this.body(false);
    if (this.i < this.s.length) throw new Unsupported();
    return body;
  }

  /** Items up to the closing brace (not consumed) or the end of the text. */
  private body(nested: boolean): Body {
    const attributes = new Map<string, Value>();
    const blocks = new Map<string, unknown>();
    for (;;) {
      this.skip(true);
      if (this.i >= this.s.length) {
        if (nested) throw new Unsupported();
        break;
      }
      if (this.s[this.i] === '}') {
        if (!nested) throw new Unsupported();
        break;
      }
      const name = this.ident();
      this.skip(false);
      if (this.s[this.i] === '=') {
        this.i++;
        if (attributes.has(name) || blocks.has(name)) throw new Unsupported();
        attributes.set(name, this.value());
        this.endOfLine();
        continue;
      }
      const labels: string[] = [];
      while (this.s[this.i] !== '{') {
        labels.push(this.s[this.i] === '"' ? this.string() : this.ident());
        this.skip(false);
      }
      this.i++;
      this.skip(false);
      let inner: Body;
      if (this.s[this.i] === '}') inner = {};
      else if (this.newline()) inner = this.body(true);
      else {
        // A one-line block: one attribute, then the closing brace.
        const attribute = this.ident();
        this.skip(false);
        if (this.s[this.i] !== '=') throw new Unsupported();
        this.i++;
        inner = { [attribute]: this.value() };
        this.skip(false);
        if (this.s[this.i] !== '}') throw new Unsupported();
      }
      this.i++;
      this.endOfLine();
      if (attributes.has(name)) throw new Unsupported();
      // task "a" "b" { } -> { task: { a: { b: [ body ] } } }
      let level = blocks as Map<string, unknown> | Record<string, unknown>;
      let key = name;
      for (const label of labels) {
        const get = (k: string) => (level instanceof Map ? level.get(k) : level[k]);
        const set = (k: string, v: unknown) => (level instanceof Map ? level.set(k, v) : (level[k] = v));
        let next = get(key);
        if (next === undefined) set(key, (next = {}));
        if (Array.isArray(next) || typeof next !== 'object') throw new Unsupported();
        level = next as Record<string, unknown>;
        key = label;
      }
      const existing = level instanceof Map ? level.get(key) : level[key];
      if (existing === undefined) {
        if (level instanceof Map) level.set(key, [inner]);
        else level[key] = [inner];
      } else if (Array.isArray(existing)) existing.push(inner);
      else throw new Unsupported();
    }
    const out: Body = {};
    for (const [k, v] of attributes) out[k] = v;
    for (const [k, v] of blocks) out[k] = labelsSorted(v);
    return sorted(out) as Body;
  }

  private value(): Value {
    this.skip(false);
    const c = this.s[this.i];
    if (c === '"') return this.string();
    if (c === '[') {
      this.i++;
      const list: Value[] = [];
      for (;;) {
        this.skip(true);
        if (this.s[this.i] === ']') break;
        list.push(this.value());
        this.skip(true);
        if (this.s[this.i] === ',') this.i++;
        else if (this.s[this.i] !== ']') throw new Unsupported();
      }
      this.i++;
      return list;
    }
    if (c === '{') {
      this.i++;
      const obj: Record<string, Value> = {};
      for (;;) {
        this.skip(true);
        if (this.s[this.i] === '}') break;
        const key = this.s[this.i] === '"' ? this.string() : this.ident();
        this.skip(false);
        if (this.s[this.i] !== '=' && this.s[this.i] !== ':') throw new Unsupported();
        this.i++;
        if (Object.hasOwn(obj, key)) throw new Unsupported();
        obj[key] = this.value();
        this.skip(false);
        if (this.s[this.i] === ',') this.i++;
        else if (!this.newline() && this.s[this.i] !== '}') throw new Unsupported();
      }
      this.i++;
      return sorted(obj) as Record<string, Value>;
    }
    NUMBER.lastIndex = this.i;
    const num = NUMBER.exec(this.s);
    if (num !== null) {
      const n = Number(num[0]);
      if (!num[0].includes('.') && !Number.isSafeInteger(n)) throw new Unsupported();
      this.i += num[0].length;
      return n;
    }
    const word = this.ident();
    if (word === 'true') return true;
    if (word === 'false') return false;
    if (word === 'null') return null;
    // A reference, a function call, a conditional...: the full parser's.
    throw new Unsupported();
  }

  /** A quoted string without templates; escapes decoded. */
  private string(): string {
    let out = '';
    this.i++;
    for (;;) {
      const c = this.s[this.i];
      if (c === undefined || c === '\n' || c === '\r') throw new Unsupported();
      this.i++;
      if (c === '"') return out;
      if ((c === '$' || c === '%') && this.s[this.i] === '{') throw new Unsupported();
      if (c !== '\\') {
        out += c;
        continue;
      }
      const e = this.s[this.i++];
      if (e === 'n') out += '\n';
      else if (e === 't') out += '\t';
      else if (e === 'r') out += '\r';
      else if (e === '"' || e === '\\') out += e;
      else if (e === 'u' && /^[0-9A-Fa-f]{4}$/.test(this.s.slice(this.i, this.i + 4))) {
        const unit = parseInt(this.s.slice(this.i, this.i + 4), 16);
        // Half of a surrogate pair: left to the full parser.
        if (unit >= 0xd800 && unit <= 0xdfff) throw new Unsupported();
        out += String.fromCharCode(unit);
        this.i += 4;
      } else throw new Unsupported();
    }
  }

  private ident(): string {
    IDENT.lastIndex = this.i;
    const m = IDENT.exec(this.s);
    if (m === null) throw new Unsupported();
    this.i += m[0].length;
    return m[0];
  }

  /** Spaces and comments; with `lines`, newlines too. A comment to the end of the line leaves the newline. */
  private skip(lines: boolean): void {
    const s = this.s;
    for (;;) {
      const c = s[this.i];
      if (c === ' ' || c === '\t' || (lines && (c === '\n' || c === '\r'))) this.i++;
      else if (c === '#' || (c === '/' && s[this.i + 1] === '/')) {
        while (this.i < s.length && s[this.i] !== '\n' && s[this.i] !== '\r') this.i++;
      } else if (c === '/' && s[this.i + 1] === '*') {
        const end = s.indexOf('*/', this.i + 2);
        if (end < 0 || /[\r\n]/.test(s.slice(this.i, end))) throw new Unsupported();
        this.i = end + 2;
      } else return;
    }
  }

  /** Consumes a newline (after spaces and comments) if there is one. */
  private newline(): boolean {
    this.skip(false);
    if (this.s[this.i] === '\r' && this.s[this.i + 1] === '\n') this.i += 2;
    else if (this.s[this.i] === '\n') this.i++;
    else return false;
    return true;
  }

  /** An attribute or a block ends its line (or the text). */
  private endOfLine(): void {
    if (this.newline()) return;
    if (this.i < this.s.length) throw new Unsupported();
  }
}

/** The levels of a labelled block (objects down to the array of bodies), each sorted. */
function labelsSorted(v: unknown): unknown {
  if (Array.isArray(v)) return v;
  const o = sorted(v as Record<string, unknown>);
  for (const k of Object.keys(o)) o[k] = labelsSorted(o[k]);
  return o;
}

/** Keys in the order the full parser gives them (Go's encoding/json sorts them by their bytes). */
function sorted(o: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(o).sort(byBytes)) out[k] = o[k];
  return out;
}

function byBytes(a: string, b: string): number {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return Buffer.compare(x, y);
}
