import {
  CancelledError,
  DeadlineExceededError,
  FailedPreconditionError,
  InvalidArgumentError,
  TaskRouterError,
} from "../errors.ts";
import { MAX_TIMER_MS } from "../util/long-timer.ts";
import {
  formatProbe,
  type ProbeAttempt,
  probeAttempt,
  type ReadinessProbe,
} from "./readiness-probe.ts";
import type { Task } from "./task.ts";

export {
  ATTEMPT_TIMEOUT_MS,
  DEFAULT_PROBE_INTERVAL_MS,
  formatProbe,
  type ProbeAttempt,
  type ProbeCheck,
  parseReadinessProbe,
  probeAttempt,
  type ReadinessProbe,
} from "./readiness-probe.ts";

/**
 * Readiness (`task create --readiness-probe`, SandboxWaitUntilReady,
 * PROTOCOL-LATER §5.6); the probes themselves are readiness-probe.ts.
 *
 * Contract:
 * - Attempts run one at a time, `intervalMs` apart (from the end of one to
 *   the start of the next); each is killed, and counts as failed, after
 *   ATTEMPT_TIMEOUT_MS. Attempts are skipped while the task's container is
 *   not running.
 * - Readiness is never lost: the first success sets `readyAt` (ms since the
 *   epoch), probing stops and `onReady` is called once (the caller persists
 *   it). A Readiness made with a `readyAt` never probes.
 * - `wait` resolves with `readyAt` (at once when ready), and rejects with
 *   DeadlineExceeded at its timeout, with the signal's reason when it aborts,
 *   and with FailedPrecondition once the task is torn down (`stop`).
 */

/** Longest wait one call may ask for (setTimeout's limit; docs/DECISIONS.md). */
const MAX_WAIT_MS = MAX_TIMER_MS;

/** The readiness state of one task and the loop that probes it (see the contract above). */
export class Readiness {
  private ready: number | undefined;
  private stopped = false;
  private readonly waiters = new Set<{ resolve: (at: number) => void; fail: () => void }>();
  private readonly ac = new AbortController();
  private loop: Promise<void> = Promise.resolve();

  constructor(
    readonly taskId: string,
    readonly probe: ReadinessProbe,
    readyAt: number | undefined,
    private readonly attempt: ProbeAttempt,
    private readonly onReady: (readyAt: number) => void,
  ) {
    this.ready = readyAt;
  }

  /** When the probe first succeeded (ms since the epoch); undefined while not ready. */
  get readyAt(): number | undefined {
    return this.ready;
  }

  /** Starts probing (nothing when already ready or stopped). */
  start(): void {
    if (this.ready === undefined && !this.stopped) this.loop = this.run();
  }

  private async run(): Promise<void> {
    const signal = this.ac.signal;
    while (!signal.aborted) {
      if (await this.attempt(signal).catch(() => false)) {
        if (signal.aborted) return;
        const at = Date.now();
        this.ready = at;
        for (const w of this.waiters) w.resolve(at);
        this.waiters.clear();
        this.onReady(at);
        return;
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, this.probe.intervalMs);
        function done() {
          clearTimeout(t);
          signal.removeEventListener("abort", done);
          resolve();
        }
        signal.addEventListener("abort", done, { once: true });
      });
    }
  }

  /** Stops probing (the task is torn down): pending waits fail; resolves once no attempt runs. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.ac.abort();
    for (const w of this.waiters) w.fail();
    this.waiters.clear();
    await this.loop;
  }

  /** `readyAt` once ready, waiting up to `timeoutMs` (see the contract above). */
  wait(timeoutMs: number, signal?: AbortSignal): Promise<number> {
    if (this.ready !== undefined) return Promise.resolve(this.ready);
    if (this.stopped) return Promise.reject(this.notRunning());
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise((resolve, reject) => {
      const w = {
        resolve: (at: number) => settle(() => resolve(at)),
        fail: () => settle(() => reject(this.notRunning())),
      };
      const onAbort = () => settle(() => reject(abortReason(signal)));
      const timer = setTimeout(
        () =>
          settle(() =>
            reject(
              new DeadlineExceededError(
                `task ${this.taskId} is not ready after ${timeoutMs / 1000} s (readiness probe ${formatProbe(this.probe.check)})`,
              ),
            ),
          ),
        Math.min(Math.max(0, timeoutMs), MAX_WAIT_MS),
      );
      const settle = (fn: () => void) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.waiters.delete(w);
        fn();
      };
      this.waiters.add(w);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  private notRunning(): FailedPreconditionError {
    return new FailedPreconditionError(`task ${this.taskId} was terminated before it became ready`);
  }
}

function abortReason(signal: AbortSignal | undefined): TaskRouterError {
  return signal?.reason instanceof TaskRouterError ? signal.reason : new CancelledError();
}

/** Gives `task` its Readiness for `probe` and starts probing unless `readyAt` is set. */
export function startReadiness(
  task: Task,
  probe: ReadinessProbe,
  readyAt: number | undefined,
  onReady: (readyAt: number) => void,
): void {
  task.readiness = new Readiness(task.id, probe, readyAt, probeAttempt(task, probe.check), onReady);
  task.readiness.start();
}

/**
 * When `task` became ready (ms since the epoch), waiting up to `timeoutMs`
 * (see Readiness.wait): InvalidArgument for a negative or non-finite
 * timeout, FailedPrecondition for a task created without a probe.
 */
export function waitUntilReady(
  task: Task,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<number> {
  if (!Number.isFinite(timeoutMs) || timeoutMs < 0) {
    throw new InvalidArgumentError("timeout must be a finite number of seconds, 0 or more");
  }
  if (!task.readiness) {
    throw new FailedPreconditionError(
      `task ${task.id} has no readiness probe (create it with --readiness-probe)`,
    );
  }
  return task.readiness.wait(timeoutMs, signal);
}
