/** Helpers shared by the authentication tests (test/auth*.test.ts). */
import assert from "node:assert/strict";
import { type CryptoKey, SignJWT } from "jose";
import { RouterClient } from "../../src/client/client.ts";
import type { TestRouter } from "./router.ts";

export const HOUR = 3_600_000;
export const NO_RETRY = { tries: 1, baseDelayMs: 1, maxDelayMs: 1 };
/** Clients made by `clientWith`; each test file closes them in its `after`/`afterEach` hooks. */
export const clients: RouterClient[] = [];

/** A client of `r` without retries, carrying `token` when given (recorded in `clients`). */
export function clientWith(r: TestRouter, token?: string): RouterClient {
  const c = new RouterClient(r.address, { ...(token ? { token } : {}), retry: NO_RETRY });
  clients.push(c);
  return c;
}

/** The error a promise rejects with (fails the test when it resolves). */
export async function failure(p: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await p;
  } catch (err) {
    return err as { code: number; message: string };
  }
  assert.fail("the call succeeded");
}

/** A token signed with `key` (ES256) carrying exactly `claims`. */
export function sign(key: CryptoKey, claims: Record<string, unknown>, kid = "k"): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid }).sign(key);
}
export const now = () => Math.floor(Date.now() / 1000);
