import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
} from "../../errors.ts";
import { checkArgv } from "../../exec/exec-request.ts";
import { checkMaxBytes, MAX, quote } from "../../limits.ts";
import type { TaskEnv, TaskFilesystem } from "../../runtime/runtime.ts";
import type { SidecarRuntime } from "../../runtime/sidecars.ts";
import { NO_SIDECAR_VOLUMES, type SidecarVolumes } from "../../volumes/sidecar-volumes.ts";
import { assertVolumesGranted, type Caller } from "../grants.ts";
import { adoptSidecars, launchSidecar } from "./container-launch.ts";
import { containerPtyEnv } from "./container-pty.ts";
import {
  type ContainerRecord,
  type ContainerResult,
  resultOf,
  writeContainerRecords,
} from "./container-record.ts";
import {
  type ContainerRequest,
  containerFingerprint,
  validateContainerRequest,
} from "./container-request.ts";
import {
  type ContainerInfo,
  type ContainerTask,
  type ExecPlace,
  findByName,
  infoOf,
  mainInfo,
  mainPlace,
  Wakeups,
} from "./container-views.ts";

/** Sidecars running at once in one task; past it RESOURCE_EXHAUSTED. */
export const MAX_ACTIVE = 32;
/** Ended sidecars remembered (include_terminated), the oldest forgotten first. */
const MAX_ENDED = 64;
/** How often running sidecars are checked for their entrypoint's end, ms. */
const POLL_MS = 200;

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
 * (`open` adopts them); they end when the task is removed. A sidecar holds
 * its volumes (SidecarVolumes) while it runs: they are released once it
 * ended (its container, and so its mounts, deleted).
 */
export class TaskContainers {
  private dir: string | undefined;
  private volumes: SidecarVolumes = NO_SIDECAR_VOLUMES;
  private readonly all: Sidecar[] = [];
  private readonly creating = new Map<string, { fp: string; done: Promise<Sidecar> }>();
  private readonly wakeups = new Wakeups();
  private timer: NodeJS.Timeout | undefined;
  private saving: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly task: ContainerTask,
    private readonly onError: (err: unknown) => void = () => undefined,
  ) {}

  /**
   * Keeps records in `dir`, holds sidecars' volumes through `volumes`, and
   * adopts the sidecars an earlier router left there (holding their volumes again).
   */
  async open(dir: string, volumes: SidecarVolumes = NO_SIDECAR_VOLUMES): Promise<void> {
    this.dir = dir;
    this.volumes = volumes;
    this.all.push(...(await adoptSidecars(this.task, volumes, dir, this.onError)));
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
    assertVolumesGranted(this.task.id, this.task.spec.volumes, caller, req.volumeMounts);
    const fp = containerFingerprint(req);
    const same = this.sameOrConflict(req.name, fp);
    if (same) return infoOf((await same).rec);
    const sc = this.sidecars();
    this.assertTaskRunning();
    if (this.activeCount + this.creating.size >= MAX_ACTIVE) {
      throw new ResourceExhaustedError(
        `task ${this.task.id} runs ${MAX_ACTIVE} sidecars, the limit`,
      );
    }
    const env = {
      ...this.task.env.baseEnv,
      ...this.task.resolveEnv(req.envSources, caller),
      ...containerPtyEnv(req.pty),
    };
    checkArgv(req.argv, env, "args");
    const raced = this.sameOrConflict(req.name, fp);
    if (raced) return infoOf((await raced).rec);
    const done = this.launch(sc, req, fp, env);
    this.creating.set(req.name, { fp, done });
    try {
      return infoOf((await done).rec);
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
    const s: Sidecar = await launchSidecar(this.task, sc, this.volumes, req, fp, env);
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
    return findByName(this.task, this.records(), name, includeTerminated);
  }

  /** Every container, main first, then sidecars oldest first (ended ones when asked). */
  list(includeTerminated: boolean): ContainerInfo[] {
    const side = this.records().filter((r) => includeTerminated || !r.result);
    return [mainInfo(this.task), ...side.map(infoOf)];
  }

  private records(): ContainerRecord[] {
    return this.all.map((s) => s.rec);
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
    await this.wakeups.until(() => s.rec.result !== undefined || this.closed, timeoutMs, signal);
    if (!s.rec.result && this.closed) {
      throw new FailedPreconditionError(`task ${this.task.id} is not running`);
    }
    return s.rec.result ? { ...s.rec.result } : undefined;
  }

  /**
   * TaskReloadVolumes for sidecar `containerId` (ReloadableTask.containers):
   * NotFound when unknown, FailedPrecondition unless it and the task run.
   */
  async reloadVolumes(containerId: string): Promise<void> {
    const s = this.find(containerId);
    this.assertTaskRunning();
    this.running(containerId);
    await this.volumes.reload(s.rec.volumes ?? []);
  }

  /** Where exec `containerId` runs ("" = main): NotFound for an unknown id, FailedPrecondition for an ended one. */
  place(containerId: string): ExecPlace {
    const t = this.task;
    if (containerId === "") return mainPlace(t);
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
        `container ${quote(containerId)} is not running (${infoOf(s.rec).status})`,
      );
    }
    return s;
  }

  /** Stops watching (task teardown, router shutdown): the sidecars themselves are the runtime's. */
  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.timer = undefined;
    this.wakeups.wake();
  }

  /** Watches running sidecars for their entrypoint's end while any runs. */
  private arm(): void {
    if (this.timer || this.closed || this.activeCount === 0) return;
    this.timer = setInterval(() => this.check(), POLL_MS).unref();
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
    this.volumes.release(this.task.id, s.rec.id); // its container and mounts are gone
    const ended = this.all.filter((x) => x.rec.result);
    for (const old of ended.slice(0, Math.max(0, ended.length - MAX_ENDED))) {
      this.all.splice(this.all.indexOf(old), 1);
    }
    this.wakeups.wake();
    await this.save();
  }

  private save(): Promise<void> {
    const dir = this.dir;
    if (!dir || this.closed) return this.saving;
    const records = this.records();
    this.saving = this.saving.then(() => writeContainerRecords(dir, records)).catch(this.onError);
    return this.saving;
  }
}
