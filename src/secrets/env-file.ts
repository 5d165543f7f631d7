import { InvalidArgumentError } from "../errors.ts";
import { ENV_KEY } from "./validate.ts";

/** One `KEY=VALUE` pair and the line it came from (1-based). */
export interface EnvFileEntry {
  key: string;
  value: string;
  line: number;
}

/**
 * Parses an env file (`secret create --from-env-file`):
 * - one `KEY=VALUE` a line; a trailing CR is dropped (CRLF files work);
 * - blank lines and lines whose first non-blank character is `#` are skipped;
 * - an optional `export ` prefix is allowed; blanks around KEY are ignored;
 * - VALUE is everything after the first `=`, verbatim (blanks and `#`
 *   included: there are no inline comments, escapes or `$` expansion), except
 *   that one pair of matching quotes around the whole value (`"…"` or `'…'`)
 *   is removed. Values cannot span lines.
 *
 * Errors (InvalidArgument) name `source` and the line number, never the
 * line's text: it may hold a value.
 */
export function parseEnvFile(text: string, source: string): EnvFileEntry[] {
  const out: EnvFileEntry[] = [];
  const lines = text.split("\n");
  for (const [i, raw] of lines.entries()) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    const trimmed = line.trimStart();
    if (trimmed === "" || trimmed.startsWith("#")) continue;
    const eq = trimmed.indexOf("=");
    if (eq < 0) throw new InvalidArgumentError(`${source}:${i + 1}: expected KEY=VALUE`);
    let key = trimmed.slice(0, eq).trim();
    if (/^export\s/.test(key)) key = key.slice("export".length).trim();
    if (!ENV_KEY.test(key)) {
      throw new InvalidArgumentError(
        `${source}:${i + 1}: the key is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)`,
      );
    }
    out.push({ key, value: unquote(trimmed.slice(eq + 1)), line: i + 1 });
  }
  return out;
}

function unquote(v: string): string {
  if (v.length >= 2 && (v[0] === '"' || v[0] === "'") && v[v.length - 1] === v[0]) {
    return v.slice(1, -1);
  }
  return v;
}
