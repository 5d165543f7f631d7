import { InvalidArgumentError } from "commander";

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "500ms", "30s", "10m", "1h", "2d" (bare numbers are seconds) → milliseconds. */
export function parseDuration(v: string): number {
  const m = DURATION.exec(v.trim());
  if (!m) throw new InvalidArgumentError(`not a duration: ${v} (use e.g. 500ms, 30s, 10m, 1h)`);
  return Math.round(Number(m[1]) * (UNIT_MS[m[2] ?? "s"] ?? 1000));
}

const SIZE = /^(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?$/i;
const UNIT_BYTES: Record<string, number> = { b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** "1GiB", "512M", "64k", "1000" (bytes) → bytes; units are binary (K = 1024). */
export function parseSize(v: string): number {
  const m = SIZE.exec(v.trim());
  if (!m) throw new InvalidArgumentError(`not a size: ${v} (use e.g. 64KiB, 512MiB, 1GiB)`);
  const unit = (m[2] ?? "b").toLowerCase()[0] ?? "b";
  return Math.round(Number(m[1]) * (UNIT_BYTES[unit] ?? 1));
}

export function parsePositiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0)
    throw new InvalidArgumentError(`not a positive integer: ${v}`);
  return n;
}

/** Collects repeated `--env K=V` options. */
export function collectEnv(v: string, prev: string[]): string[] {
  if (!/^[^=]+=/.test(v)) throw new InvalidArgumentError(`--env takes NAME=VALUE, got ${v}`);
  return [...prev, v];
}

/** `NAME=VALUE` strings (checked by collectEnv) as a map; a later NAME wins. */
export function envPairs(pairs: readonly string[]): Record<string, string> {
  return Object.fromEntries(
    pairs.map((p) => {
      const i = p.indexOf("=");
      return [p.slice(0, i), p.slice(i + 1)];
    }),
  );
}
