import { existsSync } from "node:fs";
import { mkdir, realpath } from "node:fs/promises";
import { join } from "node:path";
import { FailedPreconditionError } from "../../errors.ts";
import { oomKillCount } from "../../linux/cgroup.ts";
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
import { checkpointContainer, restoreDetached } from "./checkpoint.ts";
import { resolveConfined } from "./confined-path.ts";
import { ImageRoots } from "./image-roots.ts";
import { OciCli } from "./oci-cli.ts";
import { DEFAULT_CAPS } from "./oci-spec.ts";
import { RuncAgents } from "./runc-agents.ts";
import { spawnRuncExec, TOOL_ENV } from "./runc-exec.ts";
import { checkDataDir, RuncLayout } from "./runc-layout.ts";
import { type RuncTaskFsHost, runcRootLayers, runcTaskFilesystem } from "./runc-task-fs.ts";
import { loadSeccomp, type OciSeccomp, type SeccompOption } from "./seccomp.ts";
import { RuncSidecars } from "./sidecars.ts";
import { TaskBundles } from "./task-bundles.ts";
import { checkTaskSpec, statusInTask, TINI_CANDIDATES } from "./task-config.ts";
import { TaskStates } from "./task-states.ts";

/**
 * The capabilities the seccomp profile is rendered for: any exec of a task may
 * hold them (DEFAULT_CAPS; CAP_SYS_PTRACE for a runtime_debug exec, see
 * runc-exec.ts), and the filter is the container's, shared by all of them.
 */
export const TASK_SECCOMP_CAPS = [...DEFAULT_CAPS, "CAP_SYS_PTRACE"];

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
 *
 * Its collaborators: RuncLayout (those names), TaskBundles (the bundles on
 * disk), runc-task-fs.ts (Runtime.taskFilesystem), RuncAgents (execs),
 * TaskNetworks (`--network open`), RuncSidecars, and checkpoint.ts.
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
  private readonly layout: RuncLayout;
  private readonly tasks = new TaskStates();
  private seq = 0;
  /** Image-rooted tasks: the image and its hold (released by destroyTask). */
  private readonly images = new ImageRoots();
  /** The tasks' OCI bundles on disk. */
  private readonly bundles: TaskBundles;
  /** What the task filesystems (runc-task-fs.ts) need of this runtime. */
  private readonly fsHost: RuncTaskFsHost;
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
    tini: string | undefined,
    seccomp: OciSeccomp | undefined,
    runtimeDebug: boolean,
    subnet: string | undefined,
  ) {
    const layout = new RuncLayout(dataDir, cli.flavor);
    this.layout = layout;
    this.bundles = new TaskBundles({ cli, layout, tini, seccomp, images: this.images });
    this.fsHost = {
      layout,
      seesHostMounts: cli.flavor.seesHostMounts,
      initPid: (id) => this.tasks.initPid(id),
      imageOf: (id) => this.images.imageOf(id),
    };
    this.net = new TaskNetworks(taskSubnet(subnet), layout.tag);
    this.agents = new RuncAgents({
      cli,
      bundle: (id) => layout.bundle(id),
      containerId: (id) => layout.containerId(id),
      initPid: (id) => this.tasks.initPid(id),
      oomKills: (id) => oomKillCount(this.cgroupsPath(id)),
      runtimeDebug,
    });
    this.sidecars = new RuncSidecars({
      cli,
      tini,
      seccomp,
      spawner: () => this.spawner.get(),
      bundle: (id) => layout.bundle(id),
      containerId: (id) => layout.containerId(id),
      cgroupsPath: (id) => layout.cgroupsPath(id),
      initPid: (id) => this.tasks.initPid(id),
      policies: {
        add: async (id, ctr, cgroupsPath, policy) => {
          const pid = this.tasks.initPid(id);
          if (pid === undefined) throw new FailedPreconditionError(`task ${id} is not running`);
          await this.net.addSidecar(id, layout.bundle(id), pid, { ctr, cgroupsPath, policy });
        },
        remove: (id, ctr) =>
          this.net.removeSidecar(id, layout.bundle(id), this.tasks.initPid(id), ctr),
      },
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
    checkDataDir(real);
    const tini = opts.shellInit ? undefined : TINI_CANDIDATES.find((p) => existsSync(p));
    const cli = await OciCli.open(binary, RuncLayout.stateDir(real));
    const rt = new RuncRuntime(
      real,
      cli,
      tini,
      seccomp,
      opts.runtimeDebug === true,
      opts.taskSubnet,
    );
    await mkdir(rt.cli.root, { recursive: true, mode: 0o700 });
    await rt.net.sweep(rt.layout.bundlesDir);
    return rt;
  }

  /** Lets tasks use stored images as their root (`TaskSpec.image`); set before tasks load. */
  useImages(resolve: ImageResolver): void {
    this.images.setResolver(resolve);
    this.sidecars.useImages(resolve);
  }

  /** The task's root filesystem (Runtime.taskFilesystem, see runc-task-fs.ts). */
  taskFilesystem(taskId: string): TaskFilesystem {
    return runcTaskFilesystem(this.fsHost, taskId);
  }

  /** For image-rooted tasks: the image and the task's writable layer (incremental snapshots). */
  rootLayers(taskId: string): { imageId: string; upper: string } | undefined {
    return runcRootLayers(this.fsHost, taskId);
  }

  /** The host path of the task's root filesystem (mounts made below it show in the task). */
  rootfs(taskId: string): string {
    return this.layout.rootfs(taskId);
  }

  /** The task's cgroup path (OCI cgroupsPath). */
  cgroupsPath(taskId: string): string {
    return this.layout.cgroupsPath(taskId);
  }

  checkSpec(spec: TaskSpec): void {
    checkTaskSpec(spec, this.cli.flavor);
  }

  async prepareTask(
    taskId: string,
    spec: TaskSpec = {},
    opts: { existing?: boolean; restore?: string } = {},
  ): Promise<TaskEnv> {
    const bundle = this.layout.bundle(taskId);
    // The image first (NotFound, no /bin/sh): nothing is made for a task that cannot be.
    const defaultWorkdir = await this.bundles.prepare(taskId, spec, opts);
    const cid = this.layout.containerId(taskId);
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
      defaultWorkdir,
      baseEnv: { PATH: HOST_PATH, HOME: "/root", LANG: "C.UTF-8", USER: "root", LOGNAME: "root" },
    };
  }

  status(taskId: string): TaskStatus {
    return this.tasks.status(taskId);
  }

  /** A memory snapshot of the task through the OCI runtime's checkpoint (checkpoint.ts). */
  checkpoint(taskId: string, dir: string): Promise<{ format: string }> {
    const cid = this.layout.containerId(taskId);
    return checkpointContainer(this.cli, cid, this.layout.bundle(taskId), taskId, dir);
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
    const bundle = this.layout.bundle(taskId);
    await this.agents.destroy(taskId);
    await this.sidecars.destroyAll(taskId);
    await this.cli.deleteForce(this.layout.containerId(taskId), this.tasks.initPid(taskId));
    await this.net.detach(taskId, bundle);
    await this.bundles.remove(taskId); // and releases its image
    this.tasks.forget(taskId);
  }

  async setNetworkPolicy(taskId: string, policy: NetworkPolicy): Promise<void> {
    const pid = this.tasks.initPid(taskId);
    if (pid === undefined) throw new FailedPreconditionError(`task ${taskId} is not running`);
    await this.net.setPolicy(taskId, this.layout.bundle(taskId), pid, policy);
  }

  taskNetwork(taskId: string): TaskNetworkInfo | undefined {
    return this.net.info(taskId);
  }

  resolvePath(taskId: string, path: string): string {
    return resolveConfined(this.rootfs(taskId), path);
  }

  spawn(taskId: string, spec: SpawnSpec): Promise<Proc> {
    if (this.agents.usable(taskId)) return this.agents.spawn(taskId, spec);
    const bundle = this.layout.bundle(taskId);
    const cgroup = this.cgroupsPath(taskId);
    const name = `${process.pid}-${++this.seq}`;
    return spawnRuncExec(
      {
        cli: this.cli,
        spawner: this.spawner.get(),
        containerId: this.layout.containerId(taskId),
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
