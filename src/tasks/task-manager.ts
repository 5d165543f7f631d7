import { randomBytes } from "node:crypto";
import { mkdir, readdir, rm } from "node:fs/promises";
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
import type { ExitStatus, Runtime, TaskSpec } from "../runtime/runtime.ts";
import { NO_VOLUMES, type TaskVolumes } from "../volumes/task-volumes.ts";
import type { VolumeMountRequest } from "../volumes/validate.ts";
import { adoptAll, entrypointDeps, startEntrypoint } from "./entrypoint.ts";
import { type EntrypointSpec, entrypointRecord } from "./entrypoint-spec.ts";
import { ADMIN_CALLER, type Caller, checkGrants, storedGrants } from "./grants.ts";
import { type ReadinessProbe, startReadiness } from "./readiness.ts";
import { type ExecLimits, Task } from "./task.ts";
import { readTaskRecord, saveReadyAt, type TaskRecord, writeTaskRecord } from "./task-record.ts";

const TASK_ID = new RegExp(`^[A-Za-z0-9][A-Za-z0-9._-]{0,${MAX.taskId - 1}}$`);

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

  /**
   * @param runtimes the runtimes tasks may use, by name
   * @param defaultRuntime the name of the runtime of tasks created without one
   * @param metrics where exec starts, ends and stdio bytes are reported
   * @param volumes the volumes tasks may mount (src/volumes/)
   */
  constructor(
    private readonly dataDir: string,
    private readonly runtimes: ReadonlyMap<string, Runtime>,
    private readonly defaultRuntime: string,
    private readonly limits: ExecLimits,
    private readonly metrics: Metrics = NO_METRICS,
    private readonly volumes: TaskVolumes = NO_VOLUMES,
  ) {
    if (!runtimes.has(defaultRuntime)) throw new Error(`unknown runtime ${defaultRuntime}`);
  }

  private runtimeNamed(name: string): Runtime {
    const rt = this.runtimes.get(name);
    if (!rt) {
      throw new InvalidArgumentError(
        `unknown runtime ${quote(name)} (this router has: ${[...this.runtimes.keys()].join(", ")})`,
      );
    }
    return rt;
  }

  /** Loads the task records of the data dir and prepares their runtime state. */
  async load(): Promise<void> {
    const dir = join(this.dataDir, "tasks");
    await mkdir(dir, { recursive: true });
    await rm(this.limits.spillDir, { recursive: true, force: true });
    await mkdir(this.limits.spillDir, { recursive: true, mode: 0o700 });
    for (const name of await readdir(dir)) {
      const rec = await readTaskRecord(this.dataDir, name);
      const runtime = rec && rec.id === name ? this.runtimes.get(rec.runtime) : undefined;
      if (!rec || !runtime) continue;
      if (rec.spec?.volumes) rec.spec.volumes = this.volumes.adopt(rec.id, rec.spec.volumes);
      const env = await runtime.prepareTask(rec.id, rec.spec ?? {}, { existing: true });
      const task = new Task(rec.id, rec.createdAt, runtime, env, this.limits);
      task.spec = rec.spec ?? {};
      task.allowedSecrets = storedGrants(rec.allowedSecrets);
      await task.containers.open(join(dir, rec.id), this.volumes.sidecars); // sidecars first: execs may run in them
      await adoptAll(task, rec.entrypoint, entrypointDeps(this.dataDir, this.limits));
      this.tasks.set(rec.id, task);
      this.startReadiness(task, rec);
    }
  }

  /** Starts probing `task` when its record has a probe; `readyAt` is persisted once ready. */
  private startReadiness(task: Task, rec: TaskRecord): void {
    if (!rec.readiness) return;
    const save = (at: number) =>
      void saveReadyAt(this.dataDir, task.id, at).catch(this.limits.onError);
    startReadiness(task, rec.readiness.probe, rec.readiness.readyAt, save);
  }

  /**
   * Creates a task on `opts.runtime` (default: the router's default runtime)
   * with the limits and network of `opts.spec` (InvalidArgument when the
   * runtime cannot give them).
   */
  async create(
    taskId?: string,
    opts: {
      runtime?: string;
      spec?: TaskSpec;
      allowedSecrets?: readonly string[];
      /** Checked already (parseReadinessProbe). */
      readinessProbe?: ReadinessProbe;
      volumes?: readonly VolumeMountRequest[];
      /** A checkpoint directory of the runtime to start the task from (memory snapshots). */
      restore?: string;
      /** Its main process (checked already: parseEntrypoint); it must start, or nothing is made. */
      entrypoint?: EntrypointSpec;
    } = {},
  ): Promise<Task> {
    const allowedSecrets = checkGrants(opts.allowedSecrets ?? []);
    const runtime = this.runtimeNamed(opts.runtime || this.defaultRuntime);
    const mounts = this.volumes.check(opts.volumes ?? [], runtime);
    const spec = { ...opts.spec };
    if (runtime.checkSpec) runtime.checkSpec(spec);
    else if (spec.image !== undefined) {
      throw new InvalidArgumentError(
        `images as task roots need the runc runtime (this task's is ${runtime.name})`,
      );
    } else if (Object.values(spec).some((v) => v !== undefined)) {
      throw new InvalidArgumentError(
        `the ${runtime.name} runtime enforces no limits or network: create the task on runc`,
      );
    }
    const id = taskId || `ta-${randomBytes(10).toString("hex")}`;
    checkMaxBytes("task_id", id, MAX.taskId);
    if (!TASK_ID.test(id)) {
      throw new InvalidArgumentError(
        `task id ${quote(id)} must be 1-${MAX.taskId} characters of [A-Za-z0-9._-], starting with a letter or digit`,
      );
    }
    if (this.tasks.has(id) || this.creating.has(id)) {
      throw new AlreadyExistsError(`task ${id} already exists`);
    }
    const createdAt = Date.now();
    if (mounts.length > 0) spec.volumes = this.volumes.attach(id, mounts); // NotFound: none held
    this.creating.add(id); // reserve the id while the runtime prepares the task
    try {
      const env = await runtime.prepareTask(
        id,
        spec,
        opts.restore ? { restore: opts.restore } : {},
      );
      const rec: TaskRecord = { id, runtime: runtime.name, createdAt, spec, allowedSecrets };
      if (opts.readinessProbe) rec.readiness = { probe: opts.readinessProbe };
      if (opts.entrypoint) rec.entrypoint = entrypointRecord(opts.entrypoint);
      await writeTaskRecord(this.dataDir, rec);
      const task = new Task(id, createdAt, runtime, env, this.limits);
      task.spec = spec;
      task.allowedSecrets = allowedSecrets;
      await task.containers.open(join(this.dataDir, "tasks", id), this.volumes.sidecars);
      const deps = entrypointDeps(this.dataDir, this.limits);
      if (opts.entrypoint) await startEntrypoint(task, opts.entrypoint, deps);
      this.tasks.set(id, task);
      this.tombstones.delete(id);
      this.creating.delete(id);
      this.startReadiness(task, rec);
      return task;
    } catch (err) {
      // Undo what the runtime made (mounts, a container) before forgetting the id.
      await runtime.destroyTask(id).catch(() => undefined);
      await rm(join(this.dataDir, "tasks", id), { recursive: true, force: true });
      this.volumes.release(id);
      this.creating.delete(id);
      throw err;
    }
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
  ): Promise<void> {
    const done = this.exec(taskId, execId).stdin.write(offset, data, eof);
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
