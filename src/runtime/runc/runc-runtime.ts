import { createHash } from "node:crypto";
import { existsSync, rmdirSync } from "node:fs";
import { mkdir, realpath, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { FailedPreconditionError } from "../../errors.ts";
import { cgroupDirs, oomKillCount } from "../../linux/cgroup.ts";
import { UNSAFE_MOUNT_PATH, unmountAll } from "../../linux/mount.ts";
import { mountsUnder } from "../../linux/mountinfo.ts";
import { HOST_PATH } from "../host/host-runtime.ts";
import { checkNativeHelpers, nativeHelper } from "../native.ts";
import { TaskNetworks, taskSubnet } from "../network/task-networks.ts";
import type {
  AdoptedProc,
  ImageResolver,
  NetworkPolicy,
  Proc,
  Runtime,
  SpawnSpec,
  TaskEnv,
  TaskFilesystem,
  TaskNetworkInfo,
  TaskSpec,
  TaskStatus,
} from "../runtime.ts";
import { lazySpawner } from "../spawner.ts";
import { checkpointContainer, restoreDetached, restoreLayers } from "./checkpoint.ts";
import { resolveConfined } from "./confined-path.ts";
import { copyRootAttrs, existsInside, ImageRoots } from "./image-roots.ts";
import { OciCli } from "./oci-cli.ts";
import { DEFAULT_CAPS } from "./oci-spec.ts";
import { hostImage, layerDirs, mountRootfs, type RootfsLayer } from "./rootfs.ts";
import { RuncAgents } from "./runc-agents.ts";
import { spawnRuncExec, TOOL_ENV } from "./runc-exec.ts";
import { loadSeccomp, type OciSeccomp, type SeccompOption } from "./seccomp.ts";
import { RuncSidecars } from "./sidecars.ts";
import {
  checkTaskSpec,
  clearStatusDir,
  statusInTask,
  TINI_CANDIDATES,
  taskConfig,
} from "./task-config.ts";
import { exposeMount, hideMount } from "./task-mounts.ts";
import { TaskStates } from "./task-states.ts";

/**
 * The capabilities the seccomp profile is rendered for: any exec of a task may
 * hold them (DEFAULT_CAPS; CAP_SYS_PTRACE for a runtime_debug exec, see
 * runc-exec.ts), and the filter is the container's, shared by all of them.
 */
export const TASK_SECCOMP_CAPS = [...DEFAULT_CAPS, "CAP_SYS_PTRACE"];

/** Directories a task must never see through the host image. */
const EXPOSED = ["/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/**
 * The `runc` runtime: every task is a long-lived OCI container run by the
 * OCI runtime CLI at `binary` (runc, crun, runsc...), and every command runs
 * in it with `<runtime> exec`. Layout under `<dataDir>/runc/` (see
 * docs/DECISIONS.md, "runc runtime"):
 *
 *   state/                 the runtime's --root (its container state)
 *   images/host/           skeleton root of the host image
 *   bundles/<task>/        the OCI bundle: config.json, rootfs/ (overlays),
 *                          upper/ and work/ (the task's writes), execs/, init.log
 */
export class RuncRuntime implements Runtime {
  readonly name = "runc";
  readonly warning = undefined;
  /** Volumes are bind mounts in the task's config (task-config.ts, volumeMounts). */
  readonly mountsVolumes = true;
  /** Some OCI runtimes report a killed exec's end late (`OciFlavor.timeoutLeadMs`). */
  get timeoutLeadMs(): number {
    return this.cli.flavor.timeoutLeadMs;
  }
  private readonly base: string;
  private readonly tag: string;
  private readonly tasks = new TaskStates();
  private image: Promise<RootfsLayer[]> | undefined;
  private seq = 0;
  /** Image-rooted tasks: the image and its hold (released by destroyTask). */
  private readonly images = new ImageRoots();
  private readonly spawner = lazySpawner(nativeHelper("taskrouter-spawner"), TOOL_ENV);
  /** The tasks' exec agents (runc-agents.ts); execs of tasks without one use `<runtime> exec`. */
  private readonly agents: RuncAgents;
  /** The veths, NAT and policies of `--network open` tasks. */
  private readonly net: TaskNetworks;
  /** The tasks' sidecar containers (Runtime.sidecars). */
  readonly sidecars: RuncSidecars;

  private constructor(
    dataDir: string,
    private readonly cli: OciCli,
    private readonly tini: string | undefined,
    private readonly seccomp: OciSeccomp | undefined,
    runtimeDebug: boolean,
    subnet: string | undefined,
  ) {
    this.base = join(dataDir, "runc");
    this.tag = createHash("sha256").update(dataDir).digest("hex").slice(0, 10);
    this.net = new TaskNetworks(taskSubnet(subnet), this.tag);
    this.agents = new RuncAgents({
      cli,
      bundle: (id) => this.bundle(id),
      containerId: (id) => this.containerId(id),
      initPid: (id) => this.tasks.initPid(id),
      oomKills: (id) => oomKillCount(this.cgroupsPath(id)),
      runtimeDebug,
    });
    this.sidecars = new RuncSidecars({
      cli,
      tini,
      seccomp,
      spawner: () => this.spawner.get(),
      bundle: (id) => this.bundle(id),
      containerId: (id) => this.containerId(id),
      cgroupsPath: (id) => this.cgroupsPath(id),
      initPid: (id) => this.tasks.initPid(id),
    });
  }

  /**
   * A runtime for `dataDir` using the OCI runtime `binary`. The tasks' init
   * is tini when installed (`opts.shellInit`: the shell reaper loop anyway).
   * `opts.seccomp` (default "default"): the seccomp filter of tasks created
   * from now on ("default", "unconfined" or a profile file, see seccomp.ts).
   * `opts.runtimeDebug`: execs may ask for `runtime_debug` (the task agents
   * keep CAP_SYS_PTRACE for them). `opts.taskSubnet`: the IPv4 block of
   * `--network open` tasks' addresses (default DEFAULT_TASK_SUBNET).
   */
  static async create(
    dataDir: string,
    binary: string,
    opts: {
      shellInit?: boolean;
      seccomp?: SeccompOption;
      runtimeDebug?: boolean;
      taskSubnet?: string | undefined;
    } = {},
  ): Promise<RuncRuntime> {
    const seccomp = loadSeccomp(opts.seccomp ?? "default", TASK_SECCOMP_CAPS);
    checkNativeHelpers();
    const real = await realpath(dataDir);
    if (UNSAFE_MOUNT_PATH.test(real)) {
      throw new Error(`runc runtime: the data dir path must not contain , : \\ or spaces: ${real}`);
    }
    for (const d of EXPOSED) {
      if (real === d || real.startsWith(`${d}/`)) {
        throw new Error(`runc runtime: the data dir ${real} is inside ${d}, which tasks see`);
      }
    }
    const tini = opts.shellInit ? undefined : TINI_CANDIDATES.find((p) => existsSync(p));
    const cli = await OciCli.open(binary, join(real, "runc", "state"));
    const rt = new RuncRuntime(
      real,
      cli,
      tini,
      seccomp,
      opts.runtimeDebug === true,
      opts.taskSubnet,
    );
    await mkdir(rt.cli.root, { recursive: true, mode: 0o700 });
    await rt.net.sweep(join(rt.base, "bundles"));
    return rt;
  }

  private bundle(taskId: string): string {
    return join(this.base, "bundles", taskId);
  }

  /** Lets tasks use stored images as their root (`TaskSpec.image`); set before tasks load. */
  useImages(resolve: ImageResolver): void {
    this.images.setResolver(resolve);
    this.sidecars.useImages(resolve);
  }

  /**
   * The task's root filesystem (Runtime.taskFilesystem), made of the
   * methods below: rootfs, cgroupsPath, rootLayers, exposeMount, hideMount.
   */
  taskFilesystem(taskId: string): TaskFilesystem {
    const fs: TaskFilesystem = {
      root: this.rootfs(taskId),
      cgroupsPath: this.cgroupsPath(taskId),
      // A runtime that propagates mounts by itself (runsc) needs neither (task-mounts.ts).
      exposeMount: async (hostPath, rootDir) => {
        if (this.cli.flavor.seesHostMounts) return;
        const pid = this.tasks.initPid(taskId);
        if (pid === undefined) throw new FailedPreconditionError(`task ${taskId} is not running`);
        await exposeMount(pid, this.rootfs(taskId), hostPath, rootDir);
      },
      hideMount: async (dev) => {
        const pid = this.tasks.initPid(taskId);
        if (!this.cli.flavor.seesHostMounts && pid !== undefined) await hideMount(pid, dev);
      },
    };
    const layers = this.rootLayers(taskId);
    return layers ? { ...fs, rootLayers: layers } : fs;
  }

  /** For image-rooted tasks: the image and the task's writable layer (incremental snapshots). */
  rootLayers(taskId: string): { imageId: string; upper: string } | undefined {
    const imageId = this.images.imageOf(taskId);
    return imageId ? { imageId, upper: layerDirs(this.bundle(taskId), "/").upper } : undefined;
  }

  /** The host path of the task's root filesystem (mounts made below it show in the task). */
  rootfs(taskId: string): string {
    return join(this.bundle(taskId), "rootfs");
  }

  /**
   * The task's container id: the task id, or `<tag>-<task id>` where ids
   * are shared by the whole host (`OciFlavor.hostWideIds`: routers with
   * different data dirs must not share ids).
   */
  private containerId(taskId: string): string {
    return this.cli.flavor.hostWideIds ? `${this.tag}-${taskId}` : taskId;
  }

  /** The task's cgroup path (OCI cgroupsPath). */
  cgroupsPath(taskId: string): string {
    return `/taskrouter/${this.tag}-${taskId}`;
  }

  checkSpec(spec: TaskSpec): void {
    checkTaskSpec(spec, this.cli.flavor);
  }

  async prepareTask(
    taskId: string,
    spec: TaskSpec = {},
    opts: { existing?: boolean; restore?: string } = {},
  ): Promise<TaskEnv> {
    const bundle = this.bundle(taskId);
    // The image first (NotFound, no /bin/sh): nothing is made for a task that cannot be.
    const layers = spec.image
      ? await this.images.acquire(taskId, spec.image, opts.existing === true)
      : undefined;
    await mkdir(bundle, { recursive: true, mode: 0o700 });
    await rm(join(bundle, "execs"), { recursive: true, force: true });
    await mkdir(join(bundle, "execs"), { mode: 0o700 });
    await clearStatusDir(join(bundle, "status"));
    if (opts.restore) await restoreLayers(this.cli, opts.restore, bundle);
    if (!layers) this.image ??= hostImage(join(this.base, "images", "host"));
    await mountRootfs(bundle, layers ?? (await (this.image as Promise<RootfsLayer[]>)));
    if (layers?.[0] && !opts.existing && !opts.restore)
      await copyRootAttrs(layers[0].lower, this.rootfs(taskId));
    await writeFile(
      join(bundle, "config.json"),
      JSON.stringify(
        taskConfig({
          taskId,
          bundle,
          spec,
          tini: this.tini,
          flavor: this.cli.flavor,
          cgroupsPath: this.cgroupsPath(taskId),
          seccomp: this.seccomp,
        }),
        null,
        1,
      ),
    );

    const cid = this.containerId(taskId);
    let state = await this.cli.state(cid);
    if (state?.status === "stopped" && !opts.existing) {
      await this.cli.deleteForce(cid); // a leftover of a failed create
      state = undefined;
    }
    const fresh = state === undefined;
    if (state === undefined) {
      const network = spec.network === "host" ? "host" : "none";
      const log = join(bundle, "init.log");
      if (opts.restore) await restoreDetached(this.cli, cid, bundle, opts.restore, log, network);
      else await this.cli.runDetached(cid, bundle, log, network);
      state = await this.cli.state(cid);
    }
    this.tasks.track(taskId, this.cgroupsPath(taskId), state);
    if (spec.network === "open") {
      await this.net.attach(taskId, bundle, this.tasks.initPid(taskId), fresh);
    }
    return {
      // An image without /root: its commands start in / by default.
      defaultWorkdir: !layers || existsInside(this.rootfs(taskId), "/root") ? "/root" : "/",
      baseEnv: { PATH: HOST_PATH, HOME: "/root", LANG: "C.UTF-8", USER: "root", LOGNAME: "root" },
    };
  }

  status(taskId: string): TaskStatus {
    return this.tasks.status(taskId);
  }

  /** A memory snapshot of the task through the OCI runtime's checkpoint (checkpoint.ts). */
  checkpoint(taskId: string, dir: string): Promise<{ format: string }> {
    const cid = this.containerId(taskId);
    return checkpointContainer(this.cli, cid, this.bundle(taskId), taskId, dir);
  }

  /** Ends the spawner (tasks, their containers and agents stay). */
  close(): void {
    this.spawner.close();
    this.agents.close();
  }

  adopt(taskId: string): Promise<AdoptedProc[]> {
    return this.agents.adopt(taskId);
  }

  async destroyTask(taskId: string): Promise<void> {
    const bundle = this.bundle(taskId);
    await this.agents.destroy(taskId);
    await this.sidecars.destroyAll(taskId);
    await this.cli.deleteForce(this.containerId(taskId));
    await this.net.detach(taskId, bundle);
    await unmountAll(bundle);
    // Never remove a tree with something still mounted in it (it could be this machine's files).
    if ((await mountsUnder(bundle)).length > 0) throw new Error(`mounts left under ${bundle}`);
    await rm(bundle, { recursive: true, force: true });
    for (const d of cgroupDirs(this.cgroupsPath(taskId)).reverse()) {
      try {
        rmdirSync(d);
      } catch {
        // gone already, or runc removed it
      }
    }
    this.tasks.forget(taskId);
    this.images.release(taskId);
  }

  async setNetworkPolicy(taskId: string, policy: NetworkPolicy): Promise<void> {
    const pid = this.tasks.initPid(taskId);
    if (pid === undefined) throw new FailedPreconditionError(`task ${taskId} is not running`);
    await this.net.setPolicy(taskId, this.bundle(taskId), pid, policy);
  }

  taskNetwork(taskId: string): TaskNetworkInfo | undefined {
    return this.net.info(taskId);
  }

  resolvePath(taskId: string, path: string): string {
    return resolveConfined(this.rootfs(taskId), path);
  }

  spawn(taskId: string, spec: SpawnSpec): Promise<Proc> {
    if (this.agents.usable(taskId)) return this.agents.spawn(taskId, spec);
    const bundle = this.bundle(taskId);
    const cgroup = this.cgroupsPath(taskId);
    const name = `${process.pid}-${++this.seq}`;
    return spawnRuncExec(
      {
        cli: this.cli,
        spawner: this.spawner.get(),
        containerId: this.containerId(taskId),
        filePrefix: join(bundle, "execs", name),
        oomKills: () => oomKillCount(cgroup),
        ...(!this.cli.flavor.preserveFds
          ? {
              statusFile: {
                hostPath: join(bundle, "status", `${name}.status`),
                taskPath: statusInTask(name),
              },
            }
          : {}),
      },
      spec,
    );
  }
}
