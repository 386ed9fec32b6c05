/**
 * Templating of dstream.hcl before it is parsed, as in the existing dstream:
 *   {{ env "NAME" }}   {{ env `NAME` }}   {{ env "NAME" | default "value" }}
 * Values keep their types: `count = {{ env "COUNT" }}` becomes a number. Inside a quoted string
 * the value is escaped for HCL, so quotes, backslashes and `${` in a secret cannot break the file.
 * A missing variable without a default is an error naming it and its line; with `onMissing`, the
 * error is handed over instead (the task file fails only the task that uses it) and the value
 * left empty.
 *
 * The original dstream pasted values into the file as they were, so users escaped `"` and `\` in
 * them for HCL themselves. A value whose every backslash escapes a `"` or a `\`, and that has no
 * bare `"`, reads as already escaped and goes in as it is, instead of being escaped twice.
 */
import { DstreamError, ErrorCodes } from '../errors.js';

const TAG = /\{\{-?\s*env\s+(?:"([^"]*)"|`([^`]*)`)\s*(?:\|\s*default\s+(?:"([^"]*)"|`([^`]*)`)\s*)?-?\}\}/g;
const ANY_TAG = /\{\{[^}]*\}\}/g;

export interface RenderOptions {
  /**
   * A missing variable reads as a placeholder instead of failing (checking a file in CI without
   * its secrets): an empty string inside quotes, `null` (HCL's "not set") elsewhere.
   */
  placeholders?: boolean;
  /** Each placeholder put for a missing variable, by line (1-based): what it fills was not checked. */
  onPlaceholder?: (line: number) => void;
  /** Hands a missing variable's error over instead of throwing it (the value is left empty): a task file fails only the task that uses it. */
  onMissing?: (err: DstreamError, line: number) => void;
}

export function renderTemplate(text: string, env: Record<string, string | undefined>, file = 'dstream.hcl', options: RenderOptions = {}): string {
  const lines = text.split('\n');
  return lines
    .map((line, i) => {
      let out = '';
      let last = 0;
      const comment = commentStart(line);
      for (const m of line.matchAll(ANY_TAG)) {
        const at = m.index!;
        if (at >= comment) break; // templates in comments are text
        const tag = m[0];
        TAG.lastIndex = 0;
        const parsed = TAG.exec(tag);
        if (parsed === null || parsed[0] !== tag) {
          throw new DstreamError(ErrorCodes.CONFIG, `${file}:${i + 1}:${at + 1}: cannot read template ${tag}; use {{ env "NAME" }} or {{ env "NAME" | default "value" }}`, {
            details: { file, line: i + 1, column: at + 1 },
          });
        }
        const name = parsed[1] ?? parsed[2]!;
        const fallback = parsed[3] ?? parsed[4];
        const value = env[name] !== undefined && env[name] !== '' ? env[name]! : fallback;
        if (value === undefined && options.placeholders) {
          options.onPlaceholder?.(i + 1);
          out += line.slice(last, at) + (insideString(line, at) ? '' : 'null');
          last = at + tag.length;
          continue;
        }
        if (value === undefined) {
          const err = new DstreamError(ErrorCodes.CONFIG, `${file}:${i + 1}:${at + 1}: environment variable ${name} is not set (used by ${tag}); set it, or give a default: {{ env "${name}" | default "..." }} (dstream validate --skip-env checks a file without its secrets)`, {
            details: { file, line: i + 1, column: at + 1, variable: name },
          });
          if (options.onMissing === undefined) throw err;
          options.onMissing(err, i + 1);
        }
        const inString = insideString(line, at);
        out += line.slice(last, at) + (value === undefined ? (inString ? '' : 'null') : inString ? escapeHclString(value) : value);
        last = at + tag.length;
      }
      return out + line.slice(last);
    })
    .join('\n');
}

/** Where a `#` or `//` comment starts on a line (outside strings), or the line length. */
function commentStart(line: string): number {
  let inside = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '\\') i++;
    else if (c === '"') inside = !inside;
    else if (!inside && (c === '#' || (c === '/' && line[i + 1] === '/'))) return i;
  }
  return line.length;
}

/** Whether position `at` of a line is inside a "..." literal (an odd number of unescaped quotes before it). */
function insideString(line: string, at: number): boolean {
  let inside = false;
  for (let i = 0; i < at; i++) {
    if (line[i] === '\\') i++;
    else if (line[i] === '"') inside = !inside;
  }
  return inside;
}

function escapeHclString(value: string): string {
  const escaped = /\\["\\]/.test(value) && /^(?:[^"\\]|\\["\\])*$/.test(value);
  return (escaped ? value : value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')).replace(/\$\{/g, '$${').replace(/%\{/g, '%%{').replace(/\n/g, '\\n');
}
