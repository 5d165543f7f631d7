import { errors, type JWTVerifyGetKey, type JWTVerifyResult, jwtVerify, type KeyInput } from "jose";
import { UnauthenticatedError } from "../errors.ts";
import { CLOCK_SKEW_SEC, type Principal, principalOf } from "./tokens.ts";
import type { TrustedKey } from "./trusted-keys.ts";

export interface VerifierOptions {
  /** The keys whose signatures are accepted (the router's own first). */
  keys: TrustedKey[];
  /** When set, tokens must carry this `aud`. */
  audience?: string | undefined;
  /** Allowed clock skew for `exp`/`nbf`, seconds (default 30). */
  clockToleranceSec?: number;
}

/** Verified tokens kept (until their `exp`) so hot calls skip the signature check. */
const CACHE_SIZE = 1024;
/** Longer bearer values are refused unread. */
const MAX_TOKEN = 16 * 1024;
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** The jose failures that mean "this key did not sign it": try the next key. */
const OTHER_KEY = new Set([
  "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
  "ERR_JWKS_NO_MATCHING_KEY",
  "ERR_JOSE_ALG_NOT_ALLOWED",
  "ERR_JOSE_NOT_SUPPORTED",
]);

/**
 * Verifies bearer tokens (JWS compact JWTs) against the trusted keys.
 *
 * Contract of `verify`: resolves with who the token speaks for, or throws
 * - Unauthenticated: malformed, signed by no trusted key, expired, not yet
 *   valid, no `exp`, or (with an audience set) a missing or other `aud`;
 * - PermissionDenied: valid, but grants neither a task nor the admin scope.
 * Error messages are fixed texts: they never contain the token.
 */
export class TokenVerifier {
  private readonly cache = new Map<string, { who: Principal; untilMs: number }>();

  constructor(private readonly opts: VerifierOptions) {
    if (opts.keys.length === 0) throw new Error("TokenVerifier needs at least one key");
  }

  async verify(token: string): Promise<Principal> {
    const hit = this.cache.get(token);
    if (hit && Date.now() < hit.untilMs) return hit.who;
    if (hit) this.cache.delete(token);
    if (token.length > MAX_TOKEN || !COMPACT_JWS.test(token)) {
      throw new UnauthenticatedError("malformed token: expected a signed JWT (header.payload.sig)");
    }
    const { payload } = await this.check(token);
    const who = principalOf(payload);
    this.remember(token, who, (payload.exp as number) * 1000);
    return who;
  }

  private async check(token: string): Promise<JWTVerifyResult> {
    for (const k of this.opts.keys) {
      const res = await this.tryKey(token, k.key, k.algorithms);
      if (res) return res;
    }
    throw new UnauthenticatedError("token signature is not valid for any trusted key");
  }

  /** The verified token, or undefined when `key` did not sign it. */
  private async tryKey(
    token: string,
    key: KeyInput | JWTVerifyGetKey,
    algorithms: string[],
  ): Promise<JWTVerifyResult | undefined> {
    try {
      return await jwtVerify(token, key, {
        algorithms,
        requiredClaims: ["exp"],
        clockTolerance: this.opts.clockToleranceSec ?? CLOCK_SKEW_SEC,
        ...(this.opts.audience ? { audience: this.opts.audience } : {}),
      });
    } catch (err) {
      const code = err instanceof errors.JOSEError ? err.code : "";
      if (code === "ERR_JWKS_MULTIPLE_MATCHING_KEYS") {
        // A key set with several keys fitting a token without `kid`: try each.
        for await (const candidate of err as AsyncIterable<KeyInput>) {
          const res = await this.tryKey(token, candidate, algorithms);
          if (res) return res;
        }
        return undefined;
      }
      if (OTHER_KEY.has(code)) return undefined;
      throw unauthenticated(err);
    }
  }

  private remember(token: string, who: Principal, untilMs: number): void {
    if (this.cache.size >= CACHE_SIZE) {
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    this.cache.set(token, { who, untilMs });
  }
}

function unauthenticated(err: unknown): UnauthenticatedError {
  if (err instanceof errors.JWTExpired) return new UnauthenticatedError("token expired");
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === "aud") return new UnauthenticatedError("token audience not accepted");
    if (err.claim === "exp") return new UnauthenticatedError("token has no valid exp claim");
    if (err.claim === "nbf") return new UnauthenticatedError("token not yet valid (nbf)");
    return new UnauthenticatedError(`token claim ${JSON.stringify(err.claim)} is not valid`);
  }
  return new UnauthenticatedError("malformed token");
}
