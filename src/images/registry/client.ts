import { setTimeout as sleep } from "node:timers/promises";
import {
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  TaskRouterError,
  throwIfAborted,
  UnavailableError,
} from "../../errors.ts";
import { IMAGE_INPUT } from "../../limits.ts";
import { type Credentials, RegistryAuth } from "./auth.ts";
import { readBounded } from "./bounded.ts";

/** Where images go: `HOST[:PORT]/REPO` of `serve --registry`. */
export interface RegistryRef {
  /** HOST[:PORT] as given (IPv6 in brackets). */
  host: string;
  repo: string;
}

const HOST =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?$/;
const COMPONENT = "[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*";
const REPO = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);

/**
 * Parses `--registry HOST[:PORT]/REPO` (REPO: lower-case path components as
 * the distribution spec allows them; no tag, digest or scheme). Throws an
 * Error whose message says what is wrong and what is expected.
 */
export function parseRegistryRef(value: string): RegistryRef {
  const expected = "expected HOST[:PORT]/REPO, e.g. registry.example.com:5000/team/images";
  const bad = (why: string) =>
    new Error(`--registry ${JSON.stringify(value)}: ${why} (${expected})`);
  if (/^[a-z]+:\/\//i.test(value)) {
    throw bad("no scheme (https is the default; --registry-insecure for plain http)");
  }
  const slash = value.indexOf("/");
  if (slash < 0) throw bad("no repository");
  const host = value.slice(0, slash);
  const repo = value.slice(slash + 1);
  const m = HOST.exec(host);
  if (!m) throw bad(`bad host ${JSON.stringify(host)}`);
  if (m[1] !== undefined && (Number(m[1]) < 1 || Number(m[1]) > 65535)) throw bad("bad port");
  if (/[:@]/.test(repo)) throw bad("a repository without a tag or digest");
  if (repo.length > 255 || !REPO.test(repo)) {
    throw bad(`bad repository ${JSON.stringify(repo)} (lower-case letters, digits, . _ - and /)`);
  }
  return { host, repo };
}

/** Retries of one registry operation: attempts and backoff (ms, doubling up to `maxDelayMs`). */
export interface RetryPolicy {
  attempts: number;
  firstDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 12, firstDelayMs: 250, maxDelayMs: 8000 };

/** A failure worth retrying: the registry was unreachable, reset the connection, or said 5xx/429. */
export class TransientError extends UnavailableError {}

export interface RegistryOptions {
  /** Plain http (`--registry-insecure`); https otherwise. */
  insecure?: boolean;
  credentials?: Credentials | undefined;
  retry?: RetryPolicy;
  /** Told about every retried failure (the router logs them). */
  onRetry?: (what: string, err: Error, attempt: number) => void;
}

/** A request body: bytes, or chunks streamed as they come. */
export type RequestBody = Uint8Array | AsyncIterable<Uint8Array>;

/** What a request sends; `body` is called again for each attempt (bodies are replayable). */
export interface RequestSpec {
  method: string;
  /** A path below the registry (`/v2/...`) or an absolute URL (an upload's Location). */
  path: string;
  headers?: Record<string, string>;
  body?: () => RequestBody;
  signal?: AbortSignal | undefined;
}

/**
 * The HTTP API of one registry repository (OCI distribution spec), over
 * Node's fetch (undici).
 *
 * Contract: `send` makes one request, answering a 401 through RegistryAuth
 * (and repeating the request once with the new authorization). It throws
 * TransientError for what a retry may cure (connection refused or reset,
 * 5xx, 429), NotFoundError for 404, PermissionDenied for 403, and an
 * Unavailable error for any other unexpected status; the caller consumes
 * or cancels the body of what it returns. `retrying` runs a whole
 * operation again (from its first request) after a TransientError, with
 * exponential backoff, up to the policy's attempts.
 */
export class RegistryClient {
  readonly base: string;
  readonly name: string;
  private readonly auth: RegistryAuth;
  private readonly retry: RetryPolicy;

  constructor(
    readonly ref: RegistryRef,
    private readonly opts: RegistryOptions = {},
  ) {
    this.base = `${opts.insecure ? "http" : "https"}://${ref.host}`;
    this.name = `${ref.host}/${ref.repo}`;
    this.auth = new RegistryAuth(ref.repo, opts.credentials);
    this.retry = opts.retry ?? DEFAULT_RETRY;
  }

  /** `/v2/REPO/<rest>` */
  repoPath(rest: string): string {
    return `/v2/${this.ref.repo}/${rest}`;
  }

  /** Sends one request; `ok` lists the statuses that are success (404 is NotFound unless listed). */
  async send(spec: RequestSpec, ok: number[]): Promise<Response> {
    const url = /^https?:\/\//.test(spec.path) ? spec.path : `${this.base}${spec.path}`;
    for (let round = 0; ; round++) {
      const headers: Record<string, string> = { ...spec.headers };
      const authz = this.auth.header();
      if (authz) headers.authorization = authz;
      const init: RequestInit & { duplex?: "half" } = { method: spec.method, headers };
      if (spec.body) {
        init.body = spec.body() as unknown as BodyInit;
        init.duplex = "half";
      }
      if (spec.signal) init.signal = spec.signal;
      let res: Response;
      try {
        res = await fetch(url, init);
      } catch (err) {
        throwIfAborted(spec.signal);
        const cause = (err as { cause?: { code?: string; message?: string } }).cause;
        throw new TransientError(
          `registry ${this.ref.host} unreachable (${spec.method} ${new URL(url).pathname}): ${cause?.code ?? cause?.message ?? (err as Error).message}`,
        );
      }
      if (ok.includes(res.status)) return res;
      await res.body?.cancel().catch(() => undefined);
      if (res.status === 401 && round === 0) {
        if (await this.auth.challenge(res.headers.get("www-authenticate"), spec.signal)) continue;
      }
      throw this.statusError(spec, url, res);
    }
  }

  private statusError(spec: RequestSpec, url: string, res: Response): TaskRouterError {
    const what = `registry ${this.ref.host}: ${spec.method} ${new URL(url).pathname} answered HTTP ${res.status}`;
    if (res.status === 404) return new NotFoundError(what);
    if (res.status === 401) return new PermissionDeniedError(`${what} (credentials refused)`);
    if (res.status === 403) return new PermissionDeniedError(what);
    if (res.status >= 500 || res.status === 429 || res.status === 408) {
      return new TransientError(what);
    }
    return new UnavailableError(what);
  }

  /** Runs `op` until it does not fail with a TransientError (backoff in between), at most `attempts` times. */
  async retrying<T>(what: string, op: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    let delay = this.retry.firstDelayMs;
    for (let attempt = 1; ; attempt++) {
      throwIfAborted(signal);
      try {
        return await op();
      } catch (err) {
        if (!(err instanceof TransientError) || attempt >= this.retry.attempts) throw err;
        this.opts.onRetry?.(what, err, attempt);
        await sleep(delay, undefined, signal ? { signal } : {}).catch(() => throwIfAborted(signal));
        delay = Math.min(delay * 2, this.retry.maxDelayMs);
      }
    }
  }

  /** HEAD of a blob: its size when the repository has it, undefined when not. */
  async blobSize(digest: string, signal?: AbortSignal): Promise<number | undefined> {
    const res = await this.send(
      { method: "HEAD", path: this.repoPath(`blobs/${digest}`), signal },
      [200, 404],
    );
    if (res.status === 404) return undefined;
    return Number(res.headers.get("content-length") ?? "0");
  }

  /** HEAD of a manifest (by tag or digest): whether the repository has it. */
  async hasManifest(reference: string, signal?: AbortSignal): Promise<boolean> {
    const res = await this.send(
      {
        method: "HEAD",
        path: this.repoPath(`manifests/${reference}`),
        headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
        signal,
      },
      [200, 404],
    );
    return res.status === 200;
  }

  /**
   * Uploads a blob (POST for a session, one PATCH with the bytes, PUT with the
   * digest). `body` is called once per attempt; an interrupted upload starts
   * over (the caller retries the whole call).
   */
  async uploadBlob(digest: string, body: () => RequestBody, signal?: AbortSignal): Promise<void> {
    const start = await this.send(
      { method: "POST", path: this.repoPath("blobs/uploads/"), signal },
      [202],
    );
    let loc = this.location(start);
    const patch = await this.send(
      {
        method: "PATCH",
        path: loc,
        headers: { "content-type": "application/octet-stream" },
        body,
        signal,
      },
      [202],
    );
    loc = this.location(patch);
    const url = new URL(loc);
    url.searchParams.set("digest", digest);
    await this.send({ method: "PUT", path: url.toString(), signal }, [201]);
  }

  private location(res: Response): string {
    const loc = res.headers.get("location");
    if (!loc) throw new UnavailableError(`registry ${this.ref.host} gave no upload location`);
    return new URL(loc, this.base).toString();
  }

  /** PUT of an OCI image manifest under `tag`. */
  async putManifest(tag: string, bytes: Buffer, signal?: AbortSignal): Promise<void> {
    await this.send(
      {
        method: "PUT",
        path: this.repoPath(`manifests/${tag}`),
        headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" },
        body: () => bytes,
        signal,
      },
      [201],
    );
  }

  /**
   * GET of a manifest by tag: its bytes; NotFoundError when the repository
   * has no such tag, InvalidArgument (not a taskrouter image) when it is over
   * IMAGE_INPUT.manifestBytes (never read further).
   */
  async getManifest(tag: string, signal?: AbortSignal): Promise<Buffer> {
    const res = await this.send(
      {
        method: "GET",
        path: this.repoPath(`manifests/${tag}`),
        headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
        signal,
      },
      [200],
    );
    const max = IMAGE_INPUT.manifestBytes;
    try {
      return await readBounded(
        res,
        max,
        () =>
          new InvalidArgumentError(
            `${this.name}:${tag} is not a taskrouter image: its manifest is over ${max} bytes`,
          ),
      );
    } catch (err) {
      if (err instanceof TaskRouterError) throw err;
      throw new TransientError(`GET manifest ${tag}: ${(err as Error).message}`);
    }
  }

  /** GET of a blob: the response (follows redirects); its body is the blob's bytes. */
  getBlob(digest: string, signal?: AbortSignal): Promise<Response> {
    return this.send({ method: "GET", path: this.repoPath(`blobs/${digest}`), signal }, [200]);
  }
}
