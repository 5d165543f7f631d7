import { closeSync, constants as fsc, fstatSync, openSync, readSync, rmdirSync } from "node:fs";
import { mkdir, readdir, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { FailedPreconditionError } from "../../errors.ts";
import { quote } from "../../limits.ts";
import { cgroupDirs, oomKillCount } from "../../linux/cgroup.ts";
import { unmountAll } from "../../linux/mount.ts";
import { procStart } from "../../linux/proc.ts";
import { HOST_PATH } from "../host/host-runtime.ts";
import { hybridCgroup2Dir } from "../network/socket-cgroup.ts";
import type { ImageResolver, Proc, SpawnSpec, TaskEnv, TaskFilesystem } from "../runtime.ts";
import type { SidecarPolicies, SidecarRuntime, SidecarSpec, SidecarState } from "../sidecars.ts";
import type { Spawner } from "../spawner.ts";
import { resolveConfined } from "./confined-path.ts";
import { parseWrapperStatus } from "./exec-wrapper.ts";
import { copyRootAttrs, existsInside } from "./image-roots.ts";
import type { OciCli } from "./oci-cli.ts";
import { layerDirs, mountRootfs } from "./rootfs.ts";
import { spawnRuncExec } from "./runc-exec.ts";
import type { OciSeccomp } from "./seccomp.ts";
import { SIDECAR_STATUS, sidecarConfig } from "./sidecar-config.ts";
import { stageVolumes, unstageVolumes } from "./sidecar-volumes.ts";
import { exposeMount, hideMount } from "./task-mounts.ts";

/** What the sidecars need of the runc runtime that owns their tasks. */
export interface SidecarHost {
  cli: OciCli;
  spawner(): Spawner;
  bundle(taskId: string): string;
  containerId(taskId: string): string;
  cgroupsPath(taskId: string): string;
  /** Host pid of the task's init while it runs. */
  initPid(taskId: string): number | undefined;
  /** The host's static tini (the sidecars' PID 1), if installed. */
  tini: string | undefined;
  seccomp: OciSeccomp | undefined;
  /** Sidecars' own network policies (SidecarSpec.policy), enforced in their task's namespace. */
  policies: SidecarPolicies;
}

interface Sidecar {
  imageId: string;
  release: () => void;
  /** Host pid and start time of its init while it runs. */
  init: { pid: number; start: string } | undefined;
}

/**
 * The sidecar containers of runc/crun tasks (SidecarRuntime): each one an
 * OCI container of its own, bundle `<task bundle>/sidecars/<ctr>/` (its
 * root an overlay over the image, `status/` its exit status, `execs/`),
 * container id `<task container id>+<ctr>` ('+' is in no task id), cgroup
 * `<task cgroup>+<ctr>`, joining the task init's network namespace by path.
 * Execs in a sidecar go through `<runtime> exec` (runc-exec.ts), as in tasks
 * without an agent. Needs the OCI runtime to join a network namespace by
 * path (`OciFlavor.sidecars`: not runsc, whose sandbox has its own netstack).
 */
export class RuncSidecars implements SidecarRuntime {
  private resolver: ImageResolver | undefined;
  private readonly live = new Map<string, Sidecar>();
  private seq = 0;

  constructor(private readonly h: SidecarHost) {}

  /** Where images come from (set by Runtime.useImages). */
  useImages(resolve: ImageResolver): void {
    this.resolver = resolve;
  }

  check(_taskId: string): void {
    const f = this.h.cli.flavor;
    if (!f.sidecars) {
      throw new FailedPreconditionError(
        `the ${f.name} OCI runtime cannot run sidecar containers: its sandbox has its own network stack, which another container cannot join (use runc or crun)`,
      );
    }
  }

  private dir(taskId: string, ctr: string): string {
    return join(this.h.bundle(taskId), "sidecars", ctr);
  }

  private ociId(taskId: string, ctr: string): string {
    return `${this.h.containerId(taskId)}+${ctr}`;
  }

  private cgroup(taskId: string, ctr: string): string {
    return `${this.h.cgroupsPath(taskId)}+${ctr}`;
  }

  private rootfs(taskId: string, ctr: string): string {
    return join(this.dir(taskId, ctr), "rootfs");
  }

  private async hold(taskId: string, ctr: string, imageId: string, existing: boolean) {
    if (!this.resolver) throw new FailedPreconditionError("this router has no image store");
    const key = `${taskId}/${ctr}`;
    const had = this.live.get(key);
    if (had?.imageId === imageId) return had;
    had?.release();
    const got = await this.resolver(imageId, { existing });
    const s: Sidecar = { imageId, release: got.release, init: undefined };
    this.live.set(key, s);
    await mountRootfs(this.dir(taskId, ctr), [{ target: "/", lower: got.dir }]);
    if (!existing) await copyRootAttrs(got.dir, this.rootfs(taskId, ctr));
    return s;
  }

  private env(taskId: string, ctr: string): TaskEnv {
    return {
      defaultWorkdir: existsInside(this.rootfs(taskId, ctr), "/root") ? "/root" : "/",
      baseEnv: { PATH: HOST_PATH, HOME: "/root", LANG: "C.UTF-8", USER: "root", LOGNAME: "root" },
    };
  }

  async start(taskId: string, ctr: string, spec: SidecarSpec): Promise<TaskEnv> {
    this.check(taskId);
    const taskInit = this.h.initPid(taskId);
    if (taskInit === undefined) throw new FailedPreconditionError(`task ${taskId} is not running`);
    const dir = this.dir(taskId, ctr);
    await mkdir(join(dir, "status"), { recursive: true, mode: 0o700 });
    await mkdir(join(dir, "execs"), { recursive: true, mode: 0o700 });
    try {
      const s = await this.hold(taskId, ctr, spec.imageId, false);
      const env = this.env(taskId, ctr);
      const cwd = spec.cwd ?? env.defaultWorkdir;
      const st = await stat(resolveConfined(this.rootfs(taskId, ctr), cwd)).catch(() => undefined);
      if (!st?.isDirectory()) {
        throw new FailedPreconditionError(
          `workdir ${quote(cwd, { ends: true })} ${st ? "is not a directory" : "does not exist"} in image ${spec.imageId}`,
        );
      }
      const config = sidecarConfig({
        dir,
        hostname: taskId.slice(0, 63).replace(/[^A-Za-z0-9.-]/g, "-"),
        argv: spec.argv,
        env: spec.env,
        cwd,
        cgroupsPath: this.cgroup(taskId, ctr),
        netns: spec.network === "host" ? undefined : `/proc/${taskInit}/ns/net`,
        memoryBytes: spec.memoryBytes,
        volumes: await stageVolumes(dir, spec.volumes),
        tini: this.h.tini,
        seccomp: this.h.seccomp,
        pty: spec.pty,
      });
      await writeFile(join(dir, "config.json"), JSON.stringify(config, null, 1));
      if (spec.policy) {
        if (spec.network === "host") {
          throw new FailedPreconditionError("a sidecar of a host-network task takes no policy");
        }
        await this.h.policies.add(taskId, ctr, this.cgroup(taskId, ctr), spec.policy);
      }
      const id = this.ociId(taskId, ctr);
      await this.h.cli.runDetached(id, dir, join(dir, "init.log"), spec.network);
      await unstageVolumes(dir);
      await this.track(taskId, ctr, s);
      return env;
    } catch (err) {
      await this.remove(taskId, ctr).catch(() => undefined);
      throw err;
    }
  }

  private async track(taskId: string, ctr: string, s: Sidecar): Promise<void> {
    const state = await this.h.cli.state(this.ociId(taskId, ctr));
    const start = state && state.pid > 0 ? procStart(state.pid) : undefined;
    s.init =
      state && state.status !== "stopped" && start !== undefined
        ? { pid: state.pid, start }
        : undefined;
  }

  async adopt(taskId: string, ctr: string, imageId: string): Promise<TaskEnv> {
    const s = await this.hold(taskId, ctr, imageId, true);
    await this.track(taskId, ctr, s);
    return this.env(taskId, ctr);
  }

  private running(taskId: string, ctr: string): Sidecar | undefined {
    const s = this.live.get(`${taskId}/${ctr}`);
    if (s?.init && procStart(s.init.pid) !== s.init.start) s.init = undefined;
    return s?.init ? s : undefined;
  }

  poll(taskId: string, ctr: string): SidecarState {
    if (this.running(taskId, ctr)) return { ended: false };
    const report = parseWrapperStatus(
      readStatus(join(this.dir(taskId, ctr), SIDECAR_STATUS.inDir)),
    );
    return { ended: true, status: report };
  }

  async kill(taskId: string, ctr: string): Promise<void> {
    const init = this.running(taskId, ctr)?.init;
    await this.h.cli.deleteForce(this.ociId(taskId, ctr), init?.pid);
    const s = this.live.get(`${taskId}/${ctr}`);
    if (s) s.init = undefined;
    removeCgroup(this.cgroup(taskId, ctr));
    await this.h.policies.remove(taskId, ctr); // its processes are gone: then its rules
  }

  /** Ends and removes one sidecar: its container, mounts, files, image hold. */
  private async remove(taskId: string, ctr: string): Promise<void> {
    await this.kill(taskId, ctr);
    await unmountAll(this.dir(taskId, ctr));
    await rm(this.dir(taskId, ctr), { recursive: true, force: true });
    this.live.get(`${taskId}/${ctr}`)?.release();
    this.live.delete(`${taskId}/${ctr}`);
  }

  /** Removes every sidecar of the task (Runtime.destroyTask). */
  async destroyAll(taskId: string): Promise<void> {
    const names = await readdir(join(this.h.bundle(taskId), "sidecars")).catch(() => []);
    for (const ctr of names) await this.remove(taskId, ctr);
    for (const key of [...this.live.keys()]) {
      if (key.startsWith(`${taskId}/`)) await this.remove(taskId, key.slice(taskId.length + 1));
    }
  }

  spawn(taskId: string, ctr: string, spec: SpawnSpec): Promise<Proc> {
    if (!this.running(taskId, ctr)) {
      throw new FailedPreconditionError(`container ${ctr} of task ${taskId} is not running`);
    }
    const cgroup = this.cgroup(taskId, ctr);
    return spawnRuncExec(
      {
        cli: this.h.cli,
        spawner: this.h.spawner(),
        containerId: this.ociId(taskId, ctr),
        filePrefix: join(this.dir(taskId, ctr), "execs", `${process.pid}-${++this.seq}`),
        oomKills: () => oomKillCount(cgroup),
      },
      spec,
    );
  }

  resolvePath(taskId: string, ctr: string, path: string): string {
    return resolveConfined(this.rootfs(taskId, ctr), path);
  }

  filesystem(taskId: string, ctr: string): TaskFilesystem {
    const root = this.rootfs(taskId, ctr);
    const s = this.live.get(`${taskId}/${ctr}`);
    const fs: TaskFilesystem = {
      root,
      cgroupsPath: this.cgroup(taskId, ctr),
      exposeMount: async (hostPath, rootDir) => {
        const pid = this.running(taskId, ctr)?.init?.pid;
        if (pid === undefined) throw new FailedPreconditionError(`container ${ctr} is not running`);
        await exposeMount(pid, root, hostPath, rootDir);
      },
      hideMount: async (dev) => {
        const pid = this.running(taskId, ctr)?.init?.pid;
        if (pid !== undefined) await hideMount(pid, dev);
      },
    };
    if (!s) return fs;
    return {
      ...fs,
      rootLayers: { imageId: s.imageId, upper: layerDirs(this.dir(taskId, ctr), "/").upper },
    };
  }
}

/** The wrapper's report in the sidecar's status file: at most 64 bytes of a regular file, no link followed. */
function readStatus(path: string): string {
  let fd: number;
  try {
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch {
    return "";
  }
  try {
    if (!fstatSync(fd).isFile()) return "";
    const buf = Buffer.alloc(64);
    return buf.toString("utf8", 0, readSync(fd, buf, 0, buf.length, 0));
  } catch {
    return "";
  } finally {
    closeSync(fd);
  }
}

function removeCgroup(path: string): void {
  const v2 = hybridCgroup2Dir(path); // made by the runtime, or before it for a network policy
  for (const d of [...cgroupDirs(path).reverse(), ...(v2 ? [v2] : [])]) {
    try {
      rmdirSync(d);
    } catch {
      // gone already, or the runtime removed it
    }
  }
}
