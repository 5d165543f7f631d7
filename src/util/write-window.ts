/**
 * Writes in flight, bounded by bytes: `add` resolves at once while the
 * window has room, else once the oldest writes completed; the first failure
 * is thrown by the next `add` or by `settled`.
 */
export class WriteWindow {
  private readonly inflight: { done: Promise<void>; n: number }[] = [];
  private bytes = 0;
  private failure: { err: unknown } | undefined;

  constructor(private readonly limit: number) {}

  /** Records a failure met elsewhere (the first one is kept). */
  fail(err: unknown): void {
    this.failure ??= { err };
  }

  /** Throws the first failure seen so far, if any. */
  check(): void {
    if (this.failure) throw this.failure.err;
  }

  async add(done: Promise<void>, n: number): Promise<void> {
    done.catch((err: unknown) => {
      this.failure ??= { err };
    });
    if (this.failure) throw this.failure.err;
    this.inflight.push({ done, n });
    this.bytes += n;
    while (this.bytes > this.limit) await this.shift();
  }

  /** Every write added so far completed; throws the first failure. */
  async settled(): Promise<void> {
    while (this.inflight.length > 0) await this.shift();
    if (this.failure) throw this.failure.err;
  }

  private async shift(): Promise<void> {
    const first = this.inflight.shift();
    if (!first) return;
    this.bytes -= first.n;
    await first.done;
  }
}
