import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { type Metrics, NO_METRICS, type TransferDirection } from "../../metrics/metrics.ts";
import { writeFileAtomic } from "../fs-util.ts";
import type { ImageStore } from "../image-store.ts";
import type { TransferOptions, TransferProgress, TransferResult } from "../remote.ts";

/**
 * Progress bookkeeping shared by push and pull: counts, and reports to every
 * listener at most every 100 ms (and always for the last report). `bytes`
 * is progress (content bytes, skipped blobs included); `moved` is what
 * crossed the wire (blob bytes sent or received), for the metrics.
 */
export class Progress {
  readonly p: TransferProgress = {
    bytesDone: 0,
    bytesTotal: 0,
    blobsDone: 0,
    blobsTotal: 0,
    blobsSkipped: 0,
    done: false,
  };
  private last = 0;
  readonly listeners = new Set<(p: TransferProgress) => void>();

  constructor(private readonly onMoved: (bytes: number) => void = () => {}) {}

  /** Reports now when `force`, or when 100 ms passed since the last report. */
  report(force = false): void {
    const now = Date.now();
    if (!force && now - this.last < 100) return;
    this.last = now;
    for (const l of this.listeners) l({ ...this.p });
  }

  bytes(n: number): void {
    this.p.bytesDone += n;
    this.report();
  }

  /** `n` bytes of a blob were sent or received (progress is reported apart, with `bytes`). */
  moved(n: number): void {
    this.onMoved(n);
  }

  result(reference: string): TransferResult {
    this.p.done = true;
    this.p.bytesDone = Math.max(this.p.bytesDone, this.p.bytesTotal);
    this.report(true);
    return { ...this.p, reference };
  }
}

/**
 * One transfer per image id at a time: a second caller for the same id joins
 * the first (and gets its progress from then on). Each transfer run is
 * reported to `metrics` (its duration and outcome, and the bytes it moves).
 */
export class Inflight {
  private readonly running = new Map<
    string,
    { promise: Promise<TransferResult>; progress: Progress }
  >();

  constructor(
    private readonly direction: TransferDirection,
    private readonly metrics: Metrics = NO_METRICS,
  ) {}

  run(
    id: string,
    opts: TransferOptions,
    fn: (progress: Progress) => Promise<TransferResult>,
  ): Promise<TransferResult> {
    let cur = this.running.get(id);
    if (!cur) {
      const { direction, metrics } = this;
      const progress = new Progress((n) => metrics.registryBytes(direction, n));
      const t0 = performance.now();
      const report = (ok: boolean) =>
        metrics.registryTransfer(direction, (performance.now() - t0) / 1000, ok);
      const promise = fn(progress)
        .then(
          (r) => {
            report(true);
            return r;
          },
          (err: unknown) => {
            report(false);
            throw err;
          },
        )
        .finally(() => this.running.delete(id));
      cur = { promise, progress };
      this.running.set(id, cur);
    }
    const { onProgress } = opts;
    if (!onProgress) return cur.promise;
    const { progress } = cur;
    progress.listeners.add(onProgress);
    const stop = () => progress.listeners.delete(onProgress);
    const signal = opts.signal;
    return new Promise<TransferResult>((resolve, reject) => {
      const onAbort = () => {
        stop();
        reject(signal?.reason);
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      cur.promise.then(
        (r) => {
          stop();
          signal?.removeEventListener("abort", onAbort);
          resolve(r);
        },
        (err: unknown) => {
          stop();
          signal?.removeEventListener("abort", onAbort);
          reject(err);
        },
      );
    });
  }
}

/**
 * Which images the registry has for sure (pushed from here, or pulled from
 * it): `<images>/registry/pushed/<id>` holds the registry's name, so a
 * router pointed at another registry pushes again.
 */
export class PushedMarks {
  private readonly dir: string;

  constructor(
    private readonly store: ImageStore,
    private readonly registry: string,
  ) {
    this.dir = join(store.root, "registry", "pushed");
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  async has(id: string): Promise<boolean> {
    const s = await readFile(join(this.dir, id), "utf8").catch(() => "");
    return s === this.registry;
  }

  async mark(id: string): Promise<void> {
    await writeFileAtomic(join(this.dir, id), Buffer.from(this.registry), this.store.tmpDir, {
      durable: false,
    });
  }
}
