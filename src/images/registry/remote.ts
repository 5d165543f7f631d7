import type { Logger } from "pino";
import { NotFoundError, UnavailableError } from "../../errors.ts";
import { type Metrics, NO_METRICS } from "../../metrics/metrics.ts";
import type { ImageStore } from "../image-store.ts";
import type { ImageRemote, TransferOptions, TransferResult } from "../remote.ts";
import { readAuthFile } from "./auth.ts";
import { parseRegistryRef, RegistryClient, type RetryPolicy } from "./client.ts";
import { Puller } from "./pull.ts";
import { Pusher } from "./push.ts";
import { PushedMarks } from "./transfer.ts";

/** `serve --registry HOST[:PORT]/REPO [--registry-insecure] [--registry-auth FILE]`. */
export interface RegistryConfig {
  ref: string;
  insecure?: boolean | undefined;
  /** A docker-style config.json with credentials under `auths`. */
  authFile?: string | undefined;
  /** Retries of each registry operation (tests shorten them). */
  retry?: RetryPolicy;
}

/** Background pushes that failed are tried again after this (doubling up to 5 min). */
const REQUEUE_FIRST_MS = 5_000;
const REQUEUE_MAX_MS = 5 * 60_000;

/**
 * Checks a registry configuration (the ref's form, the auth file) and returns
 * a factory for the image service. Throws an Error saying what is wrong, so
 * `serve` refuses to start; the registry itself is not contacted (it may be
 * down at start: pushes wait and retry, pulls fail as Unavailable). The
 * factory's `metrics` receive the registry transfers (NO_METRICS if none).
 */
export function registryRemote(
  config: RegistryConfig,
  log: Logger,
): (store: ImageStore, metrics?: Metrics) => ImageRemote {
  const ref = parseRegistryRef(config.ref);
  const credentials = config.authFile ? readAuthFile(config.authFile, ref.host) : undefined;
  if (config.authFile && !credentials) {
    log.warn({ file: config.authFile, host: ref.host }, "registry auth file has no entry for host");
  }
  return (store, metrics) =>
    new RegistryRemote(
      store,
      new RegistryClient(ref, {
        insecure: config.insecure === true,
        credentials,
        ...(config.retry ? { retry: config.retry } : {}),
        onRetry: (what, err, attempt) =>
          log.warn(
            { registry: config.ref, attempt, err: err.message },
            `registry ${what}: retrying`,
          ),
      }),
      log,
      metrics,
    );
}

/**
 * An OCI registry repository as the router's ImageRemote (see remote.ts for
 * the contract): a Pusher, a Puller, and a background queue that pushes
 * every image the router makes, retrying failed pushes with backoff until
 * they succeed or the image is gone.
 */
export class RegistryRemote implements ImageRemote {
  readonly name: string;
  private readonly marks: PushedMarks;
  private readonly pusher: Pusher;
  private readonly puller: Puller;
  private readonly closing = new AbortController();
  private readonly queue: string[] = [];
  private readonly queued = new Set<string>();
  private readonly retryDelay = new Map<string, number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private worker: Promise<void> | undefined;

  constructor(
    private readonly store: ImageStore,
    client: RegistryClient,
    private readonly log: Logger,
    metrics: Metrics = NO_METRICS,
  ) {
    this.name = client.name;
    this.marks = new PushedMarks(store, client.name);
    this.pusher = new Pusher(store, client, this.marks, this.closing.signal, metrics);
    this.puller = new Puller(store, client, this.marks, this.closing.signal, metrics);
  }

  async start(): Promise<void> {
    await this.marks.init();
    for (const m of await this.store.list()) {
      if (!(await this.marks.has(m.id))) this.imageMade(m.id);
    }
  }

  imageMade(id: string): void {
    if (this.closing.signal.aborted || this.queued.has(id)) return;
    this.queued.add(id);
    this.queue.push(id);
    this.worker ??= this.drain().finally(() => {
      this.worker = undefined;
    });
  }

  /** Pushes queued images one at a time; a failure is logged and queued again later. */
  private async drain(): Promise<void> {
    for (let id = this.queue.shift(); id !== undefined; id = this.queue.shift()) {
      this.queued.delete(id);
      if (this.closing.signal.aborted) return;
      try {
        if (await this.marks.has(id)) continue;
        const r = await this.pusher.push(id);
        this.retryDelay.delete(id);
        this.log.info(
          { image: id, reference: r.reference, blobs: r.blobsDone, skipped: r.blobsSkipped },
          "image pushed",
        );
      } catch (err) {
        if (this.closing.signal.aborted) return;
        if (err instanceof NotFoundError) continue; // removed meanwhile: nothing to push
        const delay = this.retryDelay.get(id) ?? REQUEUE_FIRST_MS;
        this.retryDelay.set(id, Math.min(delay * 2, REQUEUE_MAX_MS));
        this.log.warn(
          { image: id, registry: this.name, err: (err as Error).message, retryInMs: delay },
          "image push failed; will retry",
        );
        const t = setTimeout(() => {
          this.timers.delete(t);
          this.imageMade(id);
        }, delay);
        t.unref();
        this.timers.add(t);
      }
    }
  }

  push(id: string, opts: TransferOptions = {}): Promise<TransferResult> {
    return this.pusher.push(id, opts);
  }

  pull(id: string, opts: TransferOptions = {}): Promise<TransferResult> {
    return this.puller.pull(id, opts);
  }

  async close(): Promise<void> {
    this.closing.abort(new UnavailableError("the router is shutting down"));
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await this.worker?.catch(() => undefined);
  }
}
