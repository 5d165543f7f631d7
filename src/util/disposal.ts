/**
 * The disposal of a log, as its readers waiting for more output see it:
 * `race(changed)` resolves when `changed` does or when `dispose()` is
 * called, whichever is first, and leaves nothing registered here once it
 * resolved.
 *
 * Why not `AbortSignal.any([callSignal, disposedSignal])` per wait: on Node
 * 20 every such signal stays among the disposed signal's dependants until
 * that one aborts, so a live reader of a chatty exec added one entry per
 * output event and cancelled reads left theirs behind (docs/DECISIONS.md,
 * "The exec directory is hostile input (router side)").
 */
export class Disposal {
  private readonly wakers = new Set<() => void>();
  private done = false;

  get disposed(): boolean {
    return this.done;
  }

  /** Number of waits in progress (for tests). */
  get waiting(): number {
    return this.wakers.size;
  }

  async race(changed: Promise<void>): Promise<void> {
    if (this.done) return;
    let wake = () => {};
    const woken = new Promise<void>((resolve) => {
      wake = resolve;
    });
    this.wakers.add(wake);
    try {
      await Promise.race([changed, woken]);
    } finally {
      this.wakers.delete(wake);
    }
  }

  /** Wakes every wait in progress; later waits resolve at once. */
  dispose(): void {
    this.done = true;
    const ws = [...this.wakers];
    this.wakers.clear();
    for (const w of ws) w();
  }
}
