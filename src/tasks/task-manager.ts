import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
} from "../errors.ts";
import type { Exec, StreamName } from "../exec/exec.ts";
import { describeExec, type ExecInfo } from "../exec/exec-info.ts";
import { checkExecIds, type ExecRequest } from "../exec/exec-request.ts";
import { endsProcessByDefault, parseSignal } from "../exec/signals.ts";
import type { StdinProgress, StdinSession } from "../exec/stdin.ts";
import { checkMaxBytes, MAX, quote } from "../limits.ts";
import { type Metrics, NO_METRICS, observeRead, observeSession } from "../metrics/metrics.ts";
import type { ExitStatus, Runtime } from "../runtime/runtime.ts";
import { NO_VOLUMES, type TaskVolumes } from "../volumes/task-volumes.ts";
import { ADMIN_CALLER, type Caller } from "./grants.ts";
import type { ExecLimits, Task } from "./task.ts";
import { type CreateTaskOptions, TaskFactory } from "./task-factory.ts";

/**
 * The tasks of this router and the exec operations on them (the domain API the
 * server adapters call). Task records live in `<dataDir>/tasks/<id>/task.json`
 * so tasks survive a router restart; execs do not (their processes end with
 * the router on the host runtime).
 *
 * Errors: unknown task or exec → NotFound; exec start in a terminated task →
 * FailedPrecondition; a terminated task is remembered (for that answer) for
 * `limits.retentionMs`, and its execs are gone at once.
 */
export class TaskManager {
  private readonly tasks = new Map<string, Task>();
  /** Terminated tasks, remembered for `retentionMs`: the final state of their execs. */
  private readonly tombstones = new Map<string, ExecInfo[]>();
  /** Ids of tasks being created (reserved, not yet visible). */
  private readonly creating = new Set<string>();

  /** Execs already reported to `metrics` (an idempotent repeated start returns the same one). */
  private readonly observed = new WeakSet<Exec>();

  /** Makes and loads the tasks (task-factory.ts). */
  private readonly factory: TaskFactory;

  /**
   * @param runtimes the runtimes tasks may use, by name
   * @param defaultRuntime the name of the runtime of tasks created without one
   * @param metrics where exec starts, ends and stdio bytes are reported
   * @param volumes the volumes tasks may mount (src/volumes/)
   */
  constructor(
    private readonly dataDir: string,
    runtimes: ReadonlyMap<string, Runtime>,
    defaultRuntime: string,
    private readonly limits: ExecLimits,
    private readonly metrics: Metrics = NO_METRICS,
    private readonly volumes: TaskVolumes = NO_VOLUMES,
  ) {
    this.factory = new TaskFactory({ dataDir, runtimes, defaultRuntime, limits, volumes });
  }

  /** Loads the task records of the data dir and prepares their runtime state. */
  async load(): Promise<void> {
    await rm(this.limits.spillDir, { recursive: true, force: true });
    await mkdir(this.limits.spillDir, { recursive: true, mode: 0o700 });
    for await (const task of this.factory.loadAll()) this.tasks.set(task.id, task);
  }

  /**
   * Creates a task on `opts.runtime` (default: the router's default runtime)
   * with the limits and network of `opts.spec` (InvalidArgument when the
   * runtime cannot give them).
   */
  async create(taskId?: string, opts: CreateTaskOptions = {}): Promise<Task> {
    const c = this.factory.check(taskId, opts);
    if (this.tasks.has(c.id) || this.creating.has(c.id)) {
      throw new AlreadyExistsError(`task ${c.id} already exists`);
    }
    this.creating.add(c.id); // reserve the id while the runtime prepares the task
    let task: Task;
    try {
      task = await this.factory.make(c);
    } finally {
      this.creating.delete(c.id);
    }
    this.tasks.set(c.id, task);
    this.tombstones.delete(c.id);
    return task;
  }

  /** When the task `taskId` on this router was created (ms); undefined when there is none. */
  createdAt(taskId: string): number | undefined {
    return this.tasks.get(taskId)?.createdAt;
  }

  /** The task `taskId`; NotFound when unknown. Terminated tasks are still returned. */
  get(taskId: string): Task {
    const t = this.tasks.get(taskId);
    if (t) return t;
    if (this.tombstones.has(taskId)) {
      throw new FailedPreconditionError(`task ${taskId} is not running (terminated)`);
    }
    return this.missing(taskId);
  }

  list(): Task[] {
    return [...this.tasks.values()];
  }

  private readonly teardownHooks: ((taskId: string) => Promise<void>)[] = [];

  /**
   * Runs `hook` when a task is terminated: after its execs were killed,
   * before its runtime state is freed (the images service removes the
   * task's mounts there). A hook that throws fails the termination.
   */
  onTeardown(hook: (taskId: string) => Promise<void>): void {
    this.teardownHooks.push(hook);
  }

  /** Kills all of the task's execs, frees its runtime state and forgets it. */
  async terminate(taskId: string): Promise<void> {
    if (this.tombstones.has(taskId) && !this.tasks.has(taskId)) return; // safe to repeat
    const task = this.get(taskId);
    const finalExecs = await task.teardown();
    for (const hook of this.teardownHooks) await hook(taskId);
    this.tasks.delete(taskId);
    this.tombstones.set(taskId, finalExecs);
    setTimeout(() => this.tombstones.delete(taskId), this.limits.retentionMs).unref();
    await task.runtime.destroyTask(taskId);
    this.volumes.release(taskId);
    await rm(join(this.dataDir, "tasks", taskId), { recursive: true, force: true });
  }

  /**
   * Kills every exec of every task (router shutdown); task records stay, and
   * so do the tasks themselves: a runc task's container keeps running (with
   * what left its execs' process groups) and the next router adopts it.
   */
  async shutdown(): Promise<void> {
    await Promise.all([...this.tasks.values()].map((t) => t.teardown()));
  }

  // ---- exec operations (the TaskCommandRouter domain API) ----

  private exec(taskId: string, execId: string): Exec {
    if (execId === "") throw new InvalidArgumentError("exec_id must not be empty");
    checkMaxBytes("exec_id", execId, MAX.execId);
    return (this.tasks.get(taskId) ?? this.missing(taskId)).exec(execId);
  }

  /**
   * The answer for a task id that names no task: InvalidArgument for an
   * empty one or one past MAX.taskId (no task can have it), NotFound
   * otherwise. Every lookup of a task by id ends here when it fails, so this
   * is where task ids from requests are checked.
   */
  private missing(taskId: string): never {
    if (taskId === "") throw new InvalidArgumentError("task_id must not be empty");
    checkMaxBytes("task_id", taskId, MAX.taskId);
    throw new NotFoundError(`task ${quote(taskId)} not found`);
  }

  /**
   * Starts an exec; its ids are checked first (nothing is looked up or kept
   * for bad ones). `caller`: what the caller may use beyond the task's own
   * secret grants (the edge passes the token's; in-process callers are admin).
   */
  async startExec(taskId: string, req: ExecRequest, caller: Caller = ADMIN_CALLER): Promise<Exec> {
    checkExecIds(req);
    const t0 = performance.now();
    const task = this.get(taskId);
    const exec = await task.start(req, caller);
    if (!this.observed.has(exec)) {
      this.observed.add(exec);
      const runtime = task.runtime.name;
      this.metrics.execStarted(runtime, (performance.now() - t0) / 1000);
      void exec.exited.then(() => this.metrics.execFinished(runtime, exec.cause ?? "exited"));
    }
    return exec;
  }

  /** Exit status now, or undefined while running. */
  poll(taskId: string, execId: string): ExitStatus | undefined {
    return this.exec(taskId, execId).status;
  }

  wait(taskId: string, execId: string, signal?: AbortSignal): Promise<ExitStatus> {
    return this.exec(taskId, execId).wait(signal);
  }

  read(
    taskId: string,
    execId: string,
    stream: StreamName,
    offset: number,
    signal?: AbortSignal,
  ): AsyncGenerator<Buffer> {
    const chunks = this.exec(taskId, execId).read(stream, offset, signal);
    return this.metrics === NO_METRICS ? chunks : observeRead(chunks, stream, this.metrics);
  }

  writeStdin(
    taskId: string,
    execId: string,
    offset: number,
    data: Uint8Array,
    eof: boolean,
    signal?: AbortSignal,
  ): Promise<void> {
    const done = this.exec(taskId, execId).stdin.write(offset, data, eof, signal);
    return data.byteLength === 0
      ? done
      : done.then(() => this.metrics.stdinWritten(data.byteLength));
  }

  /** Where the exec's stdin stands; evicts its stdin stream in flight (see StdinStream.progress). */
  stdinStatus(taskId: string, execId: string): StdinProgress {
    return this.exec(taskId, execId).stdin.progress();
  }

  /** Opens a streaming stdin writer at `offset` (see StdinStream.openSession). */
  openStdinSession(taskId: string, execId: string, offset: number): StdinSession {
    const session = this.exec(taskId, execId).stdin.openSession(offset);
    return this.metrics === NO_METRICS ? session : observeSession(session, this.metrics);
  }

  // ---- our exec extensions (taskrouter.v1.Execs) ----

  /** Sets a PTY exec's terminal size (see Exec.resize). */
  resizeExec(taskId: string, execId: string, rows: number, cols: number): void {
    this.exec(taskId, execId).resize(rows, cols);
  }

  /**
   * Sends `signal` (a number or name) to the exec's whole process group;
   * FailedPrecondition once it exited. A signal whose default action ends a
   * process records the termination cause "killed".
   */
  signalExec(taskId: string, execId: string, signal: number | string): void {
    const n = parseSignal(signal);
    const e = this.exec(taskId, execId);
    if (!e.running) throw new FailedPreconditionError(`exec ${execId} has already exited`);
    e.kill(n, endsProcessByDefault(n) ? "killed" : null);
  }

  /**
   * The task's execs, oldest first. For a terminated task (within
   * `retentionMs`), the final state its execs had at teardown (cause
   * "task_terminated"), although Poll/Wait/Read on them get NotFound.
   */
  listExecs(taskId: string): ExecInfo[] {
    const task = this.tasks.get(taskId);
    const final = this.tombstones.get(taskId);
    if (!task && final) return final;
    return (task ?? this.missing(taskId))
      .listExecs()
      .sort((a, b) => a.startedAt - b.startedAt)
      .map(describeExec);
  }

  inspectExec(taskId: string, execId: string): ExecInfo {
    const final = this.tasks.has(taskId) ? undefined : this.tombstones.get(taskId);
    const found = final?.find((e) => e.execId === execId);
    if (found) return found;
    return describeExec(this.exec(taskId, execId));
  }
}
