import { AlreadyExistsError, NotFoundError } from "../errors.ts";
import type { Exec } from "../exec/exec.ts";
import { quote } from "../limits.ts";

/**
 * The execs of one task by id: those whose start is under way (their id is
 * taken already) and those it holds.
 *
 * Contract:
 * - An id names one request: `sameOrConflict` hands back the exec (or its
 *   start under way) for the same fingerprint, AlreadyExists for another.
 * - A held exec is kept until `retentionMs` after it ended, then dropped and
 *   disposed of (its logs freed); once `close`d, ended execs are kept until
 *   `collect` (the task's teardown drops them all).
 * - `get` is NotFound for an id it does not hold (starts under way included).
 */
export class ExecTable {
  private readonly execs = new Map<string, Exec>();
  /** Execs whose process the runtime is starting (the id is taken already). */
  private readonly starts = new Map<string, { fp: string; exec: Promise<Exec> }>();
  private readonly collectors = new Map<string, NodeJS.Timeout>();
  private closed = false;

  /** `onError`: a collection that failed on its own timer (logged; nothing else waits for it). */
  constructor(
    private readonly taskId: string,
    private readonly retentionMs: number,
    private readonly onError: (err: unknown) => void = () => {},
  ) {}

  /** Execs held. */
  get size(): number {
    return this.execs.size;
  }

  /** Execs held or starting: what counts against the task's limit. */
  get taken(): number {
    return this.execs.size + this.starts.size;
  }

  has(execId: string): boolean {
    return this.execs.has(execId);
  }

  list(): Exec[] {
    return [...this.execs.values()];
  }

  /** The exec `execId`, or NotFound. */
  get(execId: string): Exec {
    const e = this.execs.get(execId);
    if (!e) throw new NotFoundError(`exec ${quote(execId)} not found in task ${this.taskId}`);
    return e;
  }

  /** The exec `execId` (or its start under way) when `fp` matches; AlreadyExists when not. */
  sameOrConflict(execId: string, fp: string): Exec | Promise<Exec> | undefined {
    const held = this.execs.get(execId);
    const start = held ? undefined : this.starts.get(execId);
    const known = held?.fingerprint ?? start?.fp;
    if (known !== undefined && known !== fp) {
      throw new AlreadyExistsError(
        `exec_id ${quote(execId)} is already used by a different request`,
      );
    }
    return held ?? start?.exec;
  }

  /** Takes `execId` for the start `exec` (of request fingerprint `fp`) until it settles. */
  async starting(execId: string, fp: string, exec: Promise<Exec>): Promise<Exec> {
    this.starts.set(execId, { fp, exec });
    try {
      return await exec;
    } finally {
      this.starts.delete(execId);
    }
  }

  /** Resolves once every start under way settled. */
  async startsSettled(): Promise<void> {
    await Promise.allSettled([...this.starts.values()].map((s) => s.exec));
  }

  /** Holds `exec`; collected `retentionMs` after it ended. */
  hold(exec: Exec): void {
    this.execs.set(exec.id, exec);
    void exec.exited.then(() => this.scheduleCollect(exec));
  }

  /** Ended execs are no longer collected on their own (the task is torn down). */
  close(): void {
    this.closed = true;
  }

  private scheduleCollect(exec: Exec): void {
    if (this.closed) return;
    const t = setTimeout(() => this.collect(exec.id).catch(this.onError), this.retentionMs);
    t.unref();
    this.collectors.set(exec.id, t);
  }

  /** Drops exec `execId` (when held) and disposes of it. */
  async collect(execId: string): Promise<void> {
    const e = this.execs.get(execId);
    clearTimeout(this.collectors.get(execId));
    this.collectors.delete(execId);
    if (!e) return;
    this.execs.delete(execId);
    await e.dispose();
  }
}
