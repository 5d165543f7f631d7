import { InvalidArgumentError } from "../errors.ts";

/** Lifetime of an image made without `ttl_seconds`: 30 days, renewed whenever it is used. */
export const DEFAULT_TTL_MS = 30 * 24 * 60 * 60 * 1000;

/**
 * How long an image lives: `never` (ttl_seconds -1), a fixed lifetime
 * (ttl_seconds > 0), or the default (unset: 30 days, renewed on use).
 */
export type TtlPolicy = { kind: "never" } | { kind: "fixed"; ms: number } | { kind: "default" };

/** The policy of a request's `ttl_seconds`; 0 and negatives other than -1 are InvalidArgument. */
export function parseTtl(ttlSeconds: bigint | number | undefined): TtlPolicy {
  if (ttlSeconds === undefined) return { kind: "default" };
  const s = BigInt(ttlSeconds);
  if (s === -1n) return { kind: "never" };
  if (s <= 0n) {
    throw new InvalidArgumentError(
      `ttl_seconds must be positive, or -1 for never (got ${s.toString()})`,
    );
  }
  // Beyond ~285,000 years a ttl is "never" in practice; keep the number safe.
  const maxSeconds = BigInt(Math.floor(Number.MAX_SAFE_INTEGER / 1000 / 2));
  return { kind: "fixed", ms: Number(s > maxSeconds ? maxSeconds : s) * 1000 };
}

/** Expiry (ms since the epoch, null = never) and renewal of a policy applied at `now`. */
export function expiryOf(
  p: TtlPolicy,
  now: number,
): { expiresAtMs: number | null; renew: boolean } {
  switch (p.kind) {
    case "never":
      return { expiresAtMs: null, renew: false };
    case "fixed":
      return { expiresAtMs: now + p.ms, renew: false };
    default:
      return { expiresAtMs: now + DEFAULT_TTL_MS, renew: true };
  }
}

/** Expiry after two requests made the same image: the longer lifetime wins, "never" over all. */
export function mergeExpiry(
  a: { expiresAtMs: number | null; renew: boolean },
  b: { expiresAtMs: number | null; renew: boolean },
): { expiresAtMs: number | null; renew: boolean } {
  if (a.expiresAtMs === null || b.expiresAtMs === null) return { expiresAtMs: null, renew: false };
  return { expiresAtMs: Math.max(a.expiresAtMs, b.expiresAtMs), renew: a.renew || b.renew };
}
