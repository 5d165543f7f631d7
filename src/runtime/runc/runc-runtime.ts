import { createHash } from "node:crypto";
import { existsSync, rmdirSync } from "node:fs";
import { mkdir, realpath, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { FailedPreconditionError } from "../../errors.ts";
import { HOST_PATH } from "../host/host-runtime.ts";
import { checkNativeHelpers, nativeHelper } from "../native.ts";
import { procStatFields } from "../proc-stat.ts";
import { lookupProgram } from "../program.ts";
import type { Proc, Runtime, SpawnSpec, TaskEnv, TaskSpec, TaskStatus } from "../runtime.ts";
import { lazySpawner } from "../spawner.ts";
import {
  cgroupDirs,
  hidingV2Controllers,
  hybridWithV2Controllers,
  oomKillCount,
} from "./cgroup.ts";
import { resolveConfined } from "./confined-path.ts";
import { copyRootAttrs, existsInside, type ImageResolver, ImageRoots } from "./image-roots.ts";
import { mountsUnder, UNSAFE_MOUNT_PATH, unmountAll } from "./mounts.ts";
import { OciCli, type OciFlavor, ociFlavor } from "./oci-cli.ts";
import { DEFAULT_CAPS } from "./oci-spec.ts";
import { hostImage, layerDirs, mountRootfs, type RootfsLayer } from "./rootfs.ts";
import { spawnRuncExec, TOOL_ENV } from "./runc-exec.ts";
import { loadSeccomp, type OciSeccomp, type SeccompOption } from "./seccomp.ts";
import {
  checkTaskSpec,
  clearStatusDir,
  statusInTask,
  TINI_CANDIDATES,
  taskConfig,
} from "./task-config.ts";
import { exposeMount, hideMount } from "./task-mounts.ts";

/**
 * The capabilities the seccomp profile is rendered for: any exec of a task may
 * hold them (DEFAULT_CAPS; CAP_SYS_PTRACE for a runtime_debug exec, see
 * runc-exec.ts), and the filter is the container's, shared by all of them.
 */
export const TASK_SECCOMP_CAPS = [...DEFAULT_CAPS, "CAP_SYS_PTRACE"];

/** Directories a task must never see through the host image. */
const EXPOSED = ["/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

interface TaskInfo {
  cgroupsPath: string;
  /** Host pid and start time of the container's init; undefined once stopped. */
  init: { pid: number; start: string } | undefined;
  stopReason: string | undefined;
}

/** Measured: a killed exec's `runsc exec` exits 20-130 ms after the kill (2 cores, loaded). */
const RUNSC_TIMEOUT_LEAD_MS = 300;

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
  /** runsc reports a killed exec's end late (see Runtime.timeoutLeadMs); runc and crun do not. */
  get timeoutLeadMs(): number {
    return this.cli.flavor === "runsc" ? RUNSC_TIMEOUT_LEAD_MS : 0;
  }
  private readonly cli: OciCli;
  private readonly base: string;
  private readonly tag: string;
  private readonly tasks = new Map<string, TaskInfo>();
  private image: Promise<RootfsLayer[]> | undefined;
  private seq = 0;
  /** Image-rooted tasks: the image and its hold (released by destroyTask). */
  private readonly images = new ImageRoots();
  private readonly spawner = lazySpawner(nativeHelper("taskrouter-spawner"), TOOL_ENV);

  private constructor(
    dataDir: string,
    binary: string,
    private readonly tini: string | undefined,
    flavor: OciFlavor,
    prefix: string[],
    private readonly seccomp: OciSeccomp | undefined,
  ) {
    this.base = join(dataDir, "runc");
    this.cli = new OciCli(binary, join(this.base, "state"), flavor, prefix);
    this.tag = createHash("sha256").update(dataDir).digest("hex").slice(0, 10);
  }

  /**
   * A runtime for `dataDir` using the OCI runtime `binary`. The tasks' init
   * is tini when installed (`opts.shellInit`: the shell reaper loop anyway).
   * `opts.seccomp` (default "default"): the seccomp filter of tasks created
   * from now on ("default", "unconfined" or a profile file, see seccomp.ts).
   */
  static async create(
    dataDir: string,
    binary: string,
    opts: { shellInit?: boolean; seccomp?: SeccompOption } = {},
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
    const flavor = await ociFlavor(binary);
    // crun refuses hybrid-cgroup hosts whose cgroup2 mount has controllers: hide them from it.
    const [file = binary, ...args] =
      flavor === "crun" && hybridWithV2Controllers() ? hidingV2Controllers(binary) : [binary];
    // Resolved once: each exec then starts without a failed execve per PATH entry before it.
    const found = lookupProgram(file, process.env.PATH ?? "");
    // runsc ignores linux.seccomp unless told to load it into its sandbox (a global flag).
    const flags = flavor === "runsc" ? ["--oci-seccomp"] : [];
    const prefix = ["file" in found ? found.file : file, ...args, ...flags];
    const rt = new RuncRuntime(real, binary, tini, flavor, prefix, seccomp);
    await mkdir(rt.cli.root, { recursive: true, mode: 0o700 });
    return rt;
  }

  private bundle(taskId: string): string {
    return join(this.base, "bundles", taskId);
  }

  /** Lets tasks use stored images as their root (`TaskSpec.image`); set before tasks load. */
  setImageResolver(resolve: ImageResolver): void {
    this.images.setResolver(resolve);
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
   * The task's container id: the task id, or for runsc `<tag>-<task id>`
   * (runsc names its sandboxes' control sockets after the id, host-wide, so
   * routers with different data dirs must not share ids).
   */
  containerId(taskId: string): string {
    return this.cli.flavor === "runsc" ? `${this.tag}-${taskId}` : taskId;
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
    opts: { existing?: boolean } = {},
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
    if (!layers) this.image ??= hostImage(join(this.base, "images", "host"));
    await mountRootfs(bundle, layers ?? (await (this.image as Promise<RootfsLayer[]>)));
    if (layers?.[0] && !opts.existing) await copyRootAttrs(layers[0].lower, this.rootfs(taskId));
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

    const info: TaskInfo = {
      cgroupsPath: this.cgroupsPath(taskId),
      init: undefined,
      stopReason: undefined,
    };
    const cid = this.containerId(taskId);
    let state = await this.cli.state(cid);
    if (state?.status === "stopped" && !opts.existing) {
      await this.cli.deleteForce(cid); // a leftover of a failed create
      state = undefined;
    }
    if (state === undefined) {
      const network = spec.network === "host" ? "host" : "none";
      await this.cli.runDetached(cid, bundle, join(bundle, "init.log"), network);
      state = await this.cli.state(cid);
    }
    const start = state && state.pid > 0 ? procStart(state.pid) : undefined;
    if (state && state.status !== "stopped" && start !== undefined) {
      info.init = { pid: state.pid, start };
    } else {
      info.stopReason = this.stopReason(info);
    }
    this.tasks.set(taskId, info);
    return {
      // An image without /root: its commands start in / by default.
      defaultWorkdir: !layers || existsInside(this.rootfs(taskId), "/root") ? "/root" : "/",
      baseEnv: { PATH: HOST_PATH, HOME: "/root", LANG: "C.UTF-8", USER: "root", LOGNAME: "root" },
    };
  }

  private stopReason(info: TaskInfo): string {
    return (oomKillCount(info.cgroupsPath) ?? 0) > 0 ? "oom" : "exited";
  }

  status(taskId: string): TaskStatus {
    const info = this.tasks.get(taskId);
    if (!info) return { state: "stopped", reason: "unknown to the runtime" };
    if (info.init && procStart(info.init.pid) !== info.init.start) {
      info.init = undefined;
      info.stopReason = this.stopReason(info);
    }
    if (info.init) return { state: "running" };
    return { state: "stopped", reason: info.stopReason ?? "exited" };
  }

  /** Ends the spawner (tasks and their containers stay). */
  close(): void {
    this.spawner.close();
  }

  async destroyTask(taskId: string): Promise<void> {
    const bundle = this.bundle(taskId);
    await this.cli.deleteForce(this.containerId(taskId));
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
    this.tasks.delete(taskId);
    this.images.release(taskId);
  }

  /**
   * Makes a mount made below the task's rootfs (its root: `hostPath`, with
   * device and inode `root`) visible in the running task, when the OCI
   * runtime did not propagate it (./task-mounts.ts).
   */
  async exposeMount(
    taskId: string,
    hostPath: string,
    root: { dev: number; ino: number },
  ): Promise<void> {
    // runsc: its file server sees the host's mounts (--file-access=shared revalidates).
    if (this.cli.flavor === "runsc") return;
    await exposeMount(this.initPid(taskId), this.rootfs(taskId), hostPath, root);
  }

  /** Removes from the running task what is left of a mount of device `dev` the router detached. */
  async hideMount(taskId: string, dev: number): Promise<void> {
    if (this.cli.flavor === "runsc" || this.status(taskId).state !== "running") return;
    const pid = this.tasks.get(taskId)?.init?.pid;
    if (pid !== undefined) await hideMount(pid, dev);
  }

  private initPid(taskId: string): number {
    const pid =
      this.status(taskId).state === "running" ? this.tasks.get(taskId)?.init?.pid : undefined;
    if (pid === undefined) throw new FailedPreconditionError(`task ${taskId} is not running`);
    return pid;
  }

  resolvePath(taskId: string, path: string): string {
    return resolveConfined(this.rootfs(taskId), path);
  }

  spawn(taskId: string, spec: SpawnSpec): Promise<Proc> {
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
        ...(this.cli.flavor === "runsc"
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

/** Field 22 of /proc/<pid>/stat (start time), or undefined when gone or a zombie. */
function procStart(pid: number): string | undefined {
  const f = procStatFields(pid);
  return f === undefined || f[0] === "Z" ? undefined : f[19];
}
