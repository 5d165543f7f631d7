import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
} from "../../errors.ts";
import { checkArgv, type EnvSource } from "../../exec/exec-request.ts";
import { checkMaxBytes, MAX, quote } from "../../limits.ts";
import type {
  Proc,
  Runtime,
  SpawnSpec,
  TaskEnv,
  TaskFilesystem,
  TaskSpec,
  TaskStatus,
} from "../../runtime/runtime.ts";
import type { SidecarRuntime } from "../../runtime/sidecars.ts";
import type { Caller } from "../grants.ts";
import {
  type ContainerRecord,
  type ContainerResult,
  readContainerRecords,
  resultOf,
  writeContainerRecords,
} from "./container-record.ts";
import {
  type ContainerRequest,
  containerFingerprint,
  MAIN,
  newContainerId,
  validateContainerRequest,
} from "./container-request.ts";

/** Sidecars running at once in one task; past it RESOURCE_EXHAUSTED. */
export const MAX_ACTIVE = 32;
/** Ended sidecars remembered (include_terminated), the oldest forgotten first. */
const MAX_ENDED = 64;
/** How often running sidecars are checked for their entrypoint's end, ms. */
const POLL_MS = 200;

/** What the containers need of their task (Task satisfies it). */
export interface ContainerTask {
  readonly id: string;
  readonly runtime: Runtime;
  readonly spec: TaskSpec;
  readonly env: TaskEnv;
  readonly state: string;
  runtimeStatus(): TaskStatus;
  /** The env vars of `sources` for `caller` (PermissionDenied / NotFound before anything starts). */
  resolveEnv(sources: readonly EnvSource[], caller: Caller): Record<string, string>;
}

/** Where an exec of the task runs: its main container or a sidecar. */
export interface ExecPlace {
  readonly env: TaskEnv;
  resolvePath(path: string): string;
  spawn(spec: SpawnSpec): Promise<Proc>;
}

/** What TaskContainerGet/List tell of one container. */
export interface ContainerInfo {
  /** "" for the main container. */
  id: string;
  name: string;
  /** Free-form: "running", "exited", "terminated", "stopped (REASON)". */
  status: string;
  /** Unset while it runs. */
  result: ContainerResult | undefined;
}

interface Sidecar {
  rec: ContainerRecord;
  /** Its own defaults (image workdir, base env). */
  env: TaskEnv;
  terminating?: Promise<void>;
}

/**
 * The containers of one task (PROTOCOL-LATER §3.4, §5.10): "main" (the task
 * itself) and its sidecars, started through the runtime's SidecarRuntime.
 * Names are unique among running containers; an identical replay of a
 * create returns the running container. Records (never env values) live in
 * `<task dir>/containers.json`, so sidecars survive a router restart
 * (`open` adopts them); they end when the task is removed.
 */
export class TaskContainers {
  private dir: string | undefined;
  private readonly all: Sidecar[] = [];
  private readonly creating = new Map<string, { fp: string; done: Promise<Sidecar> }>();
  private readonly waiters = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  private saving: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly task: ContainerTask,
    private readonly onError: (err: unknown) => void = () => undefined,
  ) {}

  /** Keeps records in `dir` and adopts the sidecars an earlier router left there. */
  async open(dir: string): Promise<void> {
    this.dir = dir;
    const sc = this.task.runtime.sidecars;
    for (const rec of await readContainerRecords(dir)) {
      const s: Sidecar = { rec, env: this.task.env };
      if (!rec.result && sc) {
        try {
          s.env = await sc.adopt(this.task.id, rec.id, rec.imageId);
        } catch (err) {
          this.onError(err);
          rec.result = { status: "terminated", exitCode: 137, message: "lost at a router restart" };
        }
      }
      this.all.push(s);
    }
    this.arm();
  }

  /** Running sidecars. */
  get activeCount(): number {
    return this.all.filter((s) => !s.rec.result).length;
  }

  private sidecars(): SidecarRuntime {
    const sc = this.task.runtime.sidecars;
    if (!sc) {
      throw new FailedPreconditionError(
        `the ${this.task.runtime.name} runtime cannot run sidecar containers (its tasks have no namespaces to share): create the task on runc`,
      );
    }
    sc.check(this.task.id);
    return sc;
  }

  /** Starts a sidecar (TaskContainerCreate); an identical replay returns the running one. */
  async create(req: ContainerRequest, caller: Caller): Promise<ContainerInfo> {
    validateContainerRequest(req);
    const fp = containerFingerprint(req);
    const same = this.sameOrConflict(req.name, fp);
    if (same) return this.info(await same);
    const sc = this.sidecars();
    this.assertTaskRunning();
    if (this.activeCount + this.creating.size >= MAX_ACTIVE) {
      throw new ResourceExhaustedError(
        `task ${this.task.id} runs ${MAX_ACTIVE} sidecars, the limit`,
      );
    }
    const env = { ...this.task.env.baseEnv, ...this.task.resolveEnv(req.envSources, caller) };
    checkArgv(req.argv, env, "args");
    const raced = this.sameOrConflict(req.name, fp);
    if (raced) return this.info(await raced);
    const done = this.launch(sc, req, fp, env);
    this.creating.set(req.name, { fp, done });
    try {
      return this.info(await done);
    } finally {
      this.creating.delete(req.name);
    }
  }

  private async launch(
    sc: SidecarRuntime,
    req: ContainerRequest,
    fp: string,
    env: Record<string, string>,
  ): Promise<Sidecar> {
    const id = newContainerId();
    const mem =
      req.memoryMib !== undefined ? req.memoryMib * 1024 * 1024 : this.task.spec.memoryBytes;
    const ownEnv = await sc.start(this.task.id, id, {
      imageId: req.imageId,
      argv: req.argv,
      env,
      cwd: req.workdir,
      network: this.task.spec.network === "host" ? "host" : "none",
      memoryBytes: mem,
    });
    const rec: ContainerRecord = {
      id,
      name: req.name,
      imageId: req.imageId,
      argv: req.argv,
      fingerprint: fp,
      createdAt: Date.now(),
    };
    if (req.workdir !== undefined) rec.workdir = req.workdir;
    const s: Sidecar = { rec, env: ownEnv };
    this.all.push(s);
    await this.save();
    this.arm();
    return s;
  }

  /** The running sidecar named `name` (or its start under way) when `fp` matches; AlreadyExists when not. */
  private sameOrConflict(name: string, fp: string): Sidecar | Promise<Sidecar> | undefined {
    const starting = this.creating.get(name);
    const running = this.all.find((s) => s.rec.name === name && !s.rec.result);
    const got = running
      ? { fp: running.rec.fingerprint, v: running }
      : starting && { fp: starting.fp, v: starting.done };
    if (got && got.fp !== fp) {
      throw new AlreadyExistsError(
        `container ${quote(name)} already exists in task ${this.task.id}`,
      );
    }
    return got?.v;
  }

  private assertTaskRunning(): void {
    const rs = this.task.runtimeStatus();
    if (this.closed || this.task.state !== "running" || rs.state !== "running") {
      throw new FailedPreconditionError(`task ${this.task.id} is not running`);
    }
  }

  /** The newest container named `name` (TaskContainerGet): running first, else ended when asked. */
  get(name: string, includeTerminated: boolean): ContainerInfo {
    checkMaxBytes("container_name", name, MAX.containerId);
    if (name === "") throw new InvalidArgumentError("container_name must not be empty");
    if (name === MAIN) return this.mainInfo();
    const named = this.all.filter((s) => s.rec.name === name).reverse();
    const s = named.find((x) => !x.rec.result) ?? (includeTerminated ? named[0] : undefined);
    if (!s)
      throw new NotFoundError(
        `no ${includeTerminated ? "" : "running "}container named ${quote(name)} in task ${this.task.id}`,
      );
    return this.info(s);
  }

  /** Every container, main first, then sidecars oldest first (ended ones when asked). */
  list(includeTerminated: boolean): ContainerInfo[] {
    const side = this.all.filter((s) => includeTerminated || !s.rec.result);
    return [this.mainInfo(), ...side.map((s) => this.info(s))];
  }

  private mainInfo(): ContainerInfo {
    const rs = this.task.runtimeStatus();
    if (rs.state === "running") return { id: "", name: MAIN, status: "running", result: undefined };
    const why = rs.reason ?? "exited";
    return {
      id: "",
      name: MAIN,
      status: `stopped (${why})`,
      result: {
        status: "terminated",
        exitCode: 137,
        message: `the task's container stopped: ${why}`,
      },
    };
  }

  private info(s: Sidecar): ContainerInfo {
    const r = s.rec.result;
    return {
      id: s.rec.id,
      name: s.rec.name,
      status: !r ? "running" : r.status === "terminated" ? "terminated" : "exited",
      result: r ? { ...r } : undefined,
    };
  }

  /** The sidecar `id`: InvalidArgument for "" (the main container), NotFound when unknown. */
  private find(id: string): Sidecar {
    checkMaxBytes("container_id", id, MAX.containerId);
    if (id === "") {
      throw new InvalidArgumentError(
        "container_id must name a sidecar (the main container ends with the task)",
      );
    }
    const s = this.all.find((x) => x.rec.id === id);
    if (!s) throw new NotFoundError(`container ${quote(id)} not found in task ${this.task.id}`);
    return s;
  }

  /** Ends sidecar `id` (TaskContainerTerminate); OK when it has ended already. */
  async terminate(id: string): Promise<void> {
    const s = this.find(id);
    if (s.rec.result) return;
    s.terminating ??= (async () => {
      const sc = this.sidecars();
      await sc.kill(this.task.id, id);
      const st = sc.poll(this.task.id, id);
      // It may have exited on its own just before: its report says so.
      const status = st.ended && st.status?.code !== undefined ? st.status : undefined;
      await this.finish(s, resultOf(status, status === undefined));
    })();
    await s.terminating;
  }

  /**
   * Sidecar `id`'s result (TaskContainerWait): at once when it ended, else
   * after up to `timeoutMs` (0: answer now); undefined while it runs.
   */
  async wait(
    id: string,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<ContainerResult | undefined> {
    const s = this.find(id);
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0) {
      throw new InvalidArgumentError(
        `timeout must be a finite number of seconds >= 0, not ${timeoutMs / 1000}`,
      );
    }
    const end = Date.now() + Math.min(timeoutMs, 2 ** 31 - 1);
    while (!s.rec.result && Date.now() < end && !signal?.aborted) {
      if (this.closed) throw new FailedPreconditionError(`task ${this.task.id} is not running`);
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(t);
          signal?.removeEventListener("abort", done);
          this.waiters.delete(done);
          resolve();
        };
        const t = setTimeout(done, end - Date.now());
        signal?.addEventListener("abort", done);
        this.waiters.add(done);
      });
    }
    return s.rec.result ? { ...s.rec.result } : undefined;
  }

  /** Where exec `containerId` runs ("" = main): NotFound for an unknown id, FailedPrecondition for an ended one. */
  place(containerId: string): ExecPlace {
    const t = this.task;
    if (containerId === "") {
      return {
        env: t.env,
        resolvePath: (p) => t.runtime.resolvePath(t.id, p),
        spawn: (spec) => t.runtime.spawn(t.id, spec),
      };
    }
    const s = this.running(containerId);
    const sc = this.sidecars();
    return {
      env: s.env,
      resolvePath: (p) => sc.resolvePath(t.id, containerId, p),
      spawn: (spec) => sc.spawn(t.id, containerId, spec),
    };
  }

  /** The root filesystem of running sidecar `containerId` (mounts and snapshots). */
  filesystem(containerId: string): TaskFilesystem {
    this.running(containerId);
    return this.sidecars().filesystem(this.task.id, containerId);
  }

  private running(containerId: string): Sidecar {
    const s = this.find(containerId);
    if (s.rec.result) {
      throw new FailedPreconditionError(
        `container ${quote(containerId)} is not running (${this.info(s).status})`,
      );
    }
    return s;
  }

  /** Stops watching (task teardown, router shutdown): the sidecars themselves are the runtime's. */
  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.timer = undefined;
    for (const w of [...this.waiters]) w();
  }

  /** Watches running sidecars for their entrypoint's end while any runs. */
  private arm(): void {
    if (this.timer || this.closed || this.activeCount === 0) return;
    this.timer = setInterval(() => this.check(), POLL_MS);
    this.timer.unref();
  }

  private check(): void {
    const sc = this.task.runtime.sidecars;
    for (const s of this.all) {
      if (s.rec.result || s.terminating || !sc) continue;
      const st = sc.poll(this.task.id, s.rec.id);
      if (!st.ended) continue;
      s.terminating = sc
        .kill(this.task.id, s.rec.id)
        .catch(this.onError)
        .then(() => this.finish(s, resultOf(st.status, false)));
    }
    if (this.activeCount === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private async finish(s: Sidecar, result: ContainerResult): Promise<void> {
    if (s.rec.result) return;
    s.rec.result = result;
    s.rec.endedAt = Date.now();
    const ended = this.all.filter((x) => x.rec.result);
    for (const old of ended.slice(0, Math.max(0, ended.length - MAX_ENDED))) {
      this.all.splice(this.all.indexOf(old), 1);
    }
    for (const w of [...this.waiters]) w();
    await this.save();
  }

  private save(): Promise<void> {
    const dir = this.dir;
    if (!dir || this.closed) return this.saving;
    const records = this.all.map((s) => s.rec);
    this.saving = this.saving.then(() => writeContainerRecords(dir, records)).catch(this.onError);
    return this.saving;
  }
}
