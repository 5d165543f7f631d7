/** setTimeout's longest delay (2^31-1 ms, ~24.8 days): Node runs a longer one after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A timer from setLongTimeout. */
export interface LongTimer {
  /** Stops it (nothing once it fired). */
  clear(): void;
  /** Lets the process exit while it is pending (as Timeout.unref). */
  unref(): LongTimer;
}

/**
 * Calls `fn` once after `ms`, however long that is: the delay is armed in
 * steps of at most MAX_TIMER_MS, each re-armed until the time (counted from
 * now) has come. A `ms` of 0 or less fires at once.
 */
export function setLongTimeout(fn: () => void, ms: number): LongTimer {
  const at = Date.now() + Math.max(0, ms);
  let t: NodeJS.Timeout;
  let unref = false;
  const arm = (): void => {
    const left = at - Date.now();
    if (left > MAX_TIMER_MS) {
      t = setTimeout(arm, MAX_TIMER_MS);
    } else {
      t = setTimeout(fn, Math.max(0, left));
    }
    if (unref) t.unref();
  };
  arm();
  const timer: LongTimer = {
    clear: () => clearTimeout(t),
    unref: () => {
      unref = true;
      t.unref();
      return timer;
    },
  };
  return timer;
}
