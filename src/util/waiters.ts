/**
 * Callers waiting for "something changed" on one object (a log grew, a
 * stream ended). `wait` resolves at the next `wake`, or at once when
 * `signal` aborts (then it leaves nothing registered); it never rejects.
 * `wake` resolves every wait registered so far and is cheap when none is.
 */
export class Waiters {
  private set = new Set<() => void>();

  wait(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        signal?.removeEventListener("abort", done);
        this.set.delete(done);
        resolve();
      };
      this.set.add(done);
      signal?.addEventListener("abort", done, { once: true });
    });
  }

  wake(): void {
    if (this.set.size === 0) return; // the common case: called per chunk
    const ws = this.set;
    this.set = new Set();
    for (const w of ws) w();
  }
}
