/**
 * An in-process readers/writer lock. Many `shared` holders run together; an
 * `exclusive` holder runs alone. Writer-preferring: once an exclusive request
 * waits, new shared requests queue behind it (gc cannot starve).
 */
export class RWLock {
  private readers = 0;
  private writer = false;
  private readonly queue: { exclusive: boolean; wake: () => void }[] = [];

  async shared<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire(false);
    try {
      return await fn();
    } finally {
      this.readers--;
      this.pump();
    }
  }

  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire(true);
    try {
      return await fn();
    } finally {
      this.writer = false;
      this.pump();
    }
  }

  private acquire(exclusive: boolean): Promise<void> {
    if (this.queue.length === 0 && this.free(exclusive)) {
      this.take(exclusive);
      return Promise.resolve();
    }
    return new Promise((wake) => {
      this.queue.push({ exclusive, wake });
    });
  }

  private free(exclusive: boolean): boolean {
    return exclusive ? !this.writer && this.readers === 0 : !this.writer;
  }

  private take(exclusive: boolean): void {
    if (exclusive) this.writer = true;
    else this.readers++;
  }

  private pump(): void {
    for (;;) {
      const next = this.queue[0];
      if (!next || !this.free(next.exclusive)) return;
      this.queue.shift();
      this.take(next.exclusive);
      next.wake();
      if (next.exclusive) return;
    }
  }
}

/** A mutual-exclusion lock (one holder at a time, FIFO). */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}
