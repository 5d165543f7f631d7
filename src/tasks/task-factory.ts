import { randomBytes } from "node:crypto";
import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { InvalidArgumentError } from "../errors.ts";
import { checkMaxBytes, MAX, quote } from "../limits.ts";
import type { Runtime, TaskEnv, TaskSpec } from "../runtime/runtime.ts";
import type { TaskVolumes } from "../volumes/task-volumes.ts";
import type { VolumeMountRequest } from "../volumes/validate.ts";
import { adoptAll, entrypointDeps, startEntrypoint } from "./entrypoint.ts";
import { type EntrypointSpec, entrypointRecord } from "./entrypoint-spec.ts";
import { checkGrants, storedGrants } from "./grants.ts";
import { type ReadinessProbe, startReadiness } from "./readiness.ts";
import { type ExecLimits, Task } from "./task.ts";
import { readTaskRecord, saveReadyAt, type TaskRecord, writeTaskRecord } from "./task-record.ts";

/** The env of a task whose runtime state could not be loaded (no exec starts in it). */
const UNLOADED_ENV: TaskEnv = { defaultWorkdir: "/", baseEnv: {} };

const TASK_ID = new RegExp(`^[A-Za-z0-9][A-Za-z0-9._-]{0,${MAX.taskId - 1}}$`);

/** What a new task is made with (TaskManager.create). */
export interface CreateTaskOptions {
  /** The runtime's name; absent or "": the router's default runtime. */
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
}

/** A create request that passed `TaskFactory.check`: what `make` builds. */
export interface CheckedCreate {
  readonly id: string;
  readonly runtime: Runtime;
  /** The spec the runtime accepted (`make` adds the volumes' binds). */
  readonly spec: TaskSpec;
  readonly mounts: readonly VolumeMountRequest[];
  readonly allowedSecrets: string[];
  readonly opts: CreateTaskOptions;
}

/** The task manager's settings that tasks are made with. */
export interface TaskFactorySettings {
  dataDir: string;
  runtimes: ReadonlyMap<string, Runtime>;
  defaultRuntime: string;
  limits: ExecLimits;
  volumes: TaskVolumes;
}

/**
 * Brings the TaskManager's tasks to life: a new one from a create request,
 * or those whose records (`<dataDir>/tasks/<id>/task.json`) an earlier
 * router left. Registering them (and reserving ids) is the manager's.
 *
 * Contract:
 * - `check` changes nothing: InvalidArgument for an unknown runtime, a spec
 *   the runtime cannot give, a bad task id or bad grants; the volumes'
 *   own errors (TaskVolumes.check).
 * - `make` is all or nothing: the task is prepared by its runtime, its
 *   record written, its sidecars opened, its entrypoint started; when a
 *   step fails, what was made is undone (the runtime's task, the record,
 *   the volumes held) and the error thrown.
 * - `loadAll` yields, one at a time, every task of a valid record whose
 *   runtime this router has (others are skipped), prepared again by its
 *   runtime with its sidecars and entrypoint adopted. Loading one task
 *   never fails the others: a task whose state cannot be loaded (e.g. its
 *   exec directory was filled with junk by its own processes) is yielded
 *   stopped (Task.loadFailure, logged), to be removed with `task rm`.
 * - Every task it yields probes its readiness when it has a probe;
 *   `readyAt` is persisted once ready.
 */
export class TaskFactory {
  constructor(private readonly s: TaskFactorySettings) {
    if (!s.runtimes.has(s.defaultRuntime)) throw new Error(`unknown runtime ${s.defaultRuntime}`);
  }

  private runtimeNamed(name: string): Runtime {
    const rt = this.s.runtimes.get(name);
    if (!rt) {
      throw new InvalidArgumentError(
        `unknown runtime ${quote(name)} (this router has: ${[...this.s.runtimes.keys()].join(", ")})`,
      );
    }
    return rt;
  }

  /** Checks a create request before anything is made; a task id is chosen when none is given. */
  check(taskId: string | undefined, opts: CreateTaskOptions): CheckedCreate {
    const allowedSecrets = checkGrants(opts.allowedSecrets ?? []);
    const runtime = this.runtimeNamed(opts.runtime || this.s.defaultRuntime);
    const mounts = this.s.volumes.check(opts.volumes ?? [], runtime);
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
    return { id, runtime, spec, mounts, allowedSecrets, opts };
  }

  /** Makes the task of checked request `c` (its id reserved by the caller). */
  async make(c: CheckedCreate): Promise<Task> {
    const { id, runtime, spec, opts } = c;
    const createdAt = Date.now();
    if (c.mounts.length > 0) spec.volumes = this.s.volumes.attach(id, c.mounts); // NotFound: none held
    try {
      const env = await runtime.prepareTask(
        id,
        spec,
        opts.restore ? { restore: opts.restore } : {},
      );
      const rec: TaskRecord = {
        id,
        runtime: runtime.name,
        createdAt,
        spec,
        allowedSecrets: c.allowedSecrets,
      };
      if (opts.readinessProbe) rec.readiness = { probe: opts.readinessProbe };
      if (opts.entrypoint) rec.entrypoint = entrypointRecord(opts.entrypoint);
      await writeTaskRecord(this.s.dataDir, rec);
      const task = await this.open(rec, runtime, env);
      const deps = entrypointDeps(this.s.dataDir, this.s.limits);
      if (opts.entrypoint) await startEntrypoint(task, opts.entrypoint, deps);
      this.startReadiness(task, rec);
      return task;
    } catch (err) {
      // Undo what the runtime made (mounts, a container) before forgetting the id.
      await runtime.destroyTask(id).catch(() => undefined);
      await rm(join(this.s.dataDir, "tasks", id), { recursive: true, force: true });
      this.s.volumes.release(id);
      throw err;
    }
  }

  /** The tasks of the data dir's records, prepared again by their runtimes. */
  async *loadAll(): AsyncGenerator<Task> {
    const dir = join(this.s.dataDir, "tasks");
    await mkdir(dir, { recursive: true });
    for (const name of await readdir(dir)) {
      const rec = await readTaskRecord(this.s.dataDir, name);
      const runtime = rec && rec.id === name ? this.s.runtimes.get(rec.runtime) : undefined;
      if (!rec || !runtime) continue;
      yield await this.load(rec, runtime);
    }
  }

  /** The task of `rec` prepared again; when that fails, the task stopped with the reason logged. */
  private async load(rec: TaskRecord, runtime: Runtime): Promise<Task> {
    let task: Task | undefined;
    try {
      if (rec.spec?.volumes) rec.spec.volumes = this.s.volumes.adopt(rec.id, rec.spec.volumes);
      const env = await runtime.prepareTask(rec.id, rec.spec ?? {}, { existing: true });
      task = await this.open(rec, runtime, env);
      await adoptAll(task, rec.entrypoint, entrypointDeps(this.s.dataDir, this.s.limits));
      this.startReadiness(task, rec);
      return task;
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      task ??= new Task(rec.id, rec.createdAt, runtime, UNLOADED_ENV, this.s.limits);
      task.spec = rec.spec ?? {};
      task.allowedSecrets = storedGrants(rec.allowedSecrets);
      task.loadFailure = reason;
      task.warn(`task ${rec.id} could not be loaded; it is stopped until removed: ${reason}`);
      return task;
    }
  }

  /** The Task of record `rec`, with its sidecars open (first: execs may run in them). */
  private async open(rec: TaskRecord, runtime: Runtime, env: TaskEnv): Promise<Task> {
    const task = new Task(rec.id, rec.createdAt, runtime, env, this.s.limits);
    task.spec = rec.spec ?? {};
    task.allowedSecrets = storedGrants(rec.allowedSecrets);
    await task.containers.open(join(this.s.dataDir, "tasks", rec.id), this.s.volumes.sidecars);
    return task;
  }

  /** Starts probing `task` when its record has a probe; `readyAt` is persisted once ready. */
  private startReadiness(task: Task, rec: TaskRecord): void {
    if (!rec.readiness) return;
    const save = (at: number) =>
      void saveReadyAt(this.s.dataDir, task.id, at).catch(this.s.limits.onError);
    startReadiness(task, rec.readiness.probe, rec.readiness.readyAt, save);
  }
}
