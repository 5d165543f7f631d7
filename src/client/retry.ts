import { setTimeout as sleep } from "node:timers/promises";
import type { ServiceError } from "@grpc/grpc-js";
import { isServiceError, RETRYABLE } from "./errors.ts";

export interface RetryPolicy {
  /** Tries in all (the first call included). */
  tries: number;
  /** First backoff, doubled after each failure up to `maxDelayMs`. */
  baseDelayMs: number;
  maxDelayMs: number;
}

/** SPEC's client behaviour: 10 ms backoff, doubling, 10 tries (capped at 1 s a wait). */
export const DEFAULT_RETRY: RetryPolicy = { tries: 10, baseDelayMs: 10, maxDelayMs: 1000 };

/** True for a failure that a retry of the identical request can cure. */
export function isRetryable(err: unknown, signal?: AbortSignal): err is ServiceError {
  if (signal?.aborted) return false;
  return isServiceError(err) && RETRYABLE.has(err.code);
}

/** Runs `fn` until it succeeds, fails for good, or the policy's tries are spent; `onFailedAttempt` sees each failure. */
export async function withRetry<T>(
  fn: () => Promise<T>,
  policy: RetryPolicy = DEFAULT_RETRY,
  signal?: AbortSignal,
  onFailedAttempt?: (err: unknown) => void,
): Promise<T> {
  let delay = policy.baseDelayMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      onFailedAttempt?.(err);
      if (attempt >= policy.tries || !isRetryable(err, signal)) throw err;
      await sleep(delay, undefined, signal ? { signal } : {});
      delay = Math.min(delay * 2, policy.maxDelayMs);
    }
  }
}
