import type { StreamName, TerminationCause } from "../exec/exec.ts";
import type { StdinSession } from "../exec/stdin.ts";

/** Image operations whose durations are measured. */
export type ImageOp = "snapshot_directory" | "snapshot_filesystem" | "mount" | "unmount";

/** Which way an image moves between the router and its registry (`--registry`). */
export type TransferDirection = "push" | "pull";

/**
 * What the router reports for its metrics: the port the domain (TaskManager)
 * and the gRPC edge call, so that neither depends on a metrics library.
 * `serve --metrics-listen` plugs in the Prometheus implementation
 * (./prometheus.ts); everything else gets NO_METRICS.
 *
 * Contract for implementations: every method is cheap, synchronous and never
 * throws (callers call them inline, on hot paths such as each output chunk).
 * Durations are in seconds. Label values come from small closed sets (the
 * types below, runtime names, registered method paths), never from requests.
 */
export interface Metrics {
  /**
   * A new exec's process was started, `seconds` after its TaskExecStart
   * reached the task manager (validation, secrets, spawn). Once per exec: an
   * idempotent repeat of the same start is not reported again.
   */
  execStarted(runtime: string, seconds: number): void;
  /** An exec reported by execStarted ended, with why (exactly once). */
  execFinished(runtime: string, cause: TerminationCause): void;
  /** `bytes` of an exec's output were handed to a reader (every reader counts). */
  outputRead(stream: StreamName, bytes: number): void;
  /**
   * One read of an exec's output ended (the stream reached its end, failed or
   * was cancelled) after delivering `bytes` > 0 in `seconds`, counted from
   * its first chunk to its end.
   */
  outputStreamEnded(stream: StreamName, bytes: number, seconds: number): void;
  /** `bytes` of stdin data were accepted for an exec (a replayed prefix included). */
  stdinWritten(bytes: number): void;
  /** An image operation (snapshot, mount, unmount) ended after `seconds`. */
  imageOp(op: ImageOp, seconds: number, ok: boolean): void;
  /**
   * `bytes` of blob data (layers, the config) were sent to (push) or received
   * from (pull) the registry, reported as they move. Only blobs actually
   * transferred count: none the other side already had (skipped after a
   * HEAD, or not fetched because the store has their files); bytes of an
   * attempt that failed and was retried do count (they crossed the wire).
   * Manifests and request overhead do not.
   */
  registryBytes(direction: TransferDirection, bytes: number): void;
  /**
   * One image push or pull the router ran ended after `seconds`, ok or not.
   * Once per transfer: callers joining a transfer of the same image already
   * under way add nothing; a background push tried again later is a new
   * transfer. Transfers that found nothing to move (the registry had the
   * image, the store had it) count too.
   */
  registryTransfer(direction: TransferDirection, seconds: number, ok: boolean): void;
  /**
   * A gRPC call ended with status `code` (CANCELLED when the stream closed
   * without one). `method` is the `/<service>/<method>` path of a served
   * method, or "other" for any other path.
   */
  rpc(method: string, code: number): void;
}

const nothing = () => {};

/** Metrics that go nowhere (the default when `--metrics-listen` is not given). */
export const NO_METRICS: Metrics = {
  execStarted: nothing,
  execFinished: nothing,
  outputRead: nothing,
  outputStreamEnded: nothing,
  stdinWritten: nothing,
  imageOp: nothing,
  registryBytes: nothing,
  registryTransfer: nothing,
  rpc: nothing,
};

/** Runs `fn`, reporting its duration and outcome as image operation `op`. */
export async function timeImageOp<T>(
  metrics: Metrics | undefined,
  op: ImageOp,
  fn: () => Promise<T>,
): Promise<T> {
  if (!metrics || metrics === NO_METRICS) return fn();
  const t0 = performance.now();
  let ok = false;
  try {
    const r = await fn();
    ok = true;
    return r;
  } finally {
    metrics.imageOp(op, (performance.now() - t0) / 1000, ok);
  }
}

/** `chunks`, reporting each one's bytes and, at the end, the read's throughput to `metrics`. */
export async function* observeRead(
  chunks: AsyncGenerator<Buffer>,
  stream: StreamName,
  metrics: Metrics,
): AsyncGenerator<Buffer> {
  let first = 0;
  let bytes = 0;
  try {
    for await (const c of chunks) {
      if (bytes === 0) first = performance.now();
      bytes += c.length;
      metrics.outputRead(stream, c.length);
      yield c;
    }
  } finally {
    if (bytes > 0) metrics.outputStreamEnded(stream, bytes, (performance.now() - first) / 1000);
  }
}

/** `session`, reporting the bytes of each write it accepted to `metrics`. */
export function observeSession(session: StdinSession, metrics: Metrics): StdinSession {
  return {
    write: async (data, signal) => {
      await session.write(data, signal);
      metrics.stdinWritten(data.byteLength);
    },
    end: (signal) => session.end(signal),
  };
}
