import { mkdir, readdir, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { InvalidArgumentError } from "../../errors.ts";
import { HOST_PATH } from "../host/host-runtime.ts";
import { FS_TOOLS_IN_TASK, nativeHelper } from "../native.ts";
import type { TaskSpec } from "../runtime.ts";
import { EXEC_IN_TASK } from "./exec-wrapper.ts";
import type { OciFlavor } from "./flavors.ts";
import { buildTaskSpec, type OciMount, type OciSpec, taskProcess } from "./oci-spec.ts";
import { AGENT_IN_TASK } from "./runc-agents.ts";
import type { OciSeccomp } from "./seccomp.ts";

/** The init's reaper loop when no tini is installed: `wait` reaps every child, orphans too. */
const SHELL_REAPER = 'trap "exit 0" TERM; while :; do sleep 3600 & wait; done';
/** tini's child: a loop that a stray `kill` of its sleep does not end. */
const KEEPALIVE =
  'trap "" HUP INT QUIT TERM USR1 USR2 PIPE ALRM; while :; do sleep 2147483647; done';
/** Where the init binary appears inside a task. */
const INIT_IN_TASK = "/.taskrouter/init";
/** Where tini may be installed (the static one first: it works in any image). */
export const TINI_CANDIDATES = ["/usr/bin/tini-static", "/usr/bin/tini"];
/**
 * Runtimes without `exec --preserve-fds` (runsc): the directory the exec
 * wrapper writes statuses to (`<bundle>/status` on the host).
 */
const STATUS_IN_TASK = "/.taskrouter/status";

/** The directory of our helpers inside a task. */
const HELPERS_IN_TASK = "/.taskrouter";
/** The bundle's directory bound read-only at HELPERS_IN_TASK (see helperSkeleton). */
const SKELETON = "in-task";

/**
 * Makes `<bundle>/in-task`, bound read-only at /.taskrouter in the task so
 * that the directory is a mount point: a task can neither rename it (EBUSY)
 * nor put anything in it (EROFS), so `/.taskrouter/agent` is always our
 * binary when the router starts a task's agent by that path. It holds an
 * empty mount point for each helper bound over it (agent, exec, init) and
 * the status directory. Idempotent, and it never removes anything: a running
 * task may have it mounted (a bundle being adopted).
 */
export async function helperSkeleton(bundle: string): Promise<void> {
  const dir = join(bundle, SKELETON);
  await mkdir(join(dir, "status"), { recursive: true, mode: 0o755 });
  for (const p of [AGENT_IN_TASK, EXEC_IN_TASK, INIT_IN_TASK]) {
    const name = p.slice(HELPERS_IN_TASK.length + 1);
    await writeFile(join(dir, name), "", { flag: "a", mode: 0o644 });
  }
}

/** The task's path of the status file of exec `name` (no `preserveFds`; see taskConfig). */
export function statusInTask(name: string): string {
  return `${STATUS_IN_TASK}/${name}.status`;
}

/** What a task's config.json is made from. */
export interface TaskConfigInput {
  taskId: string;
  bundle: string;
  spec: TaskSpec;
  /** The host's tini, bind-mounted as the task's init; undefined: a shell reaper loop. */
  tini: string | undefined;
  flavor: OciFlavor;
  cgroupsPath: string;
  /** The task's seccomp filter (`serve --seccomp`); undefined: unconfined. */
  seccomp?: OciSeccomp | undefined;
  /**
   * Bind the rootfs's own /tmp onto /tmp (OciFlavor.ownTmpfsOnTmp; the caller
   * checked that it is a directory, not a link).
   */
  bindTmp?: boolean;
}

/** Our helpers every container of a task carries, read-only: the exec wrapper and the SDKs' filesystem helper. */
export function helperMounts(): OciMount[] {
  return [
    {
      destination: EXEC_IN_TASK,
      type: "bind",
      source: nativeHelper("taskrouter-exec"),
      options: ["bind", "ro"],
    },
    {
      destination: FS_TOOLS_IN_TASK,
      type: "bind",
      source: nativeHelper("modal-sandbox-fs-tools"),
      options: ["bind", "ro"],
    },
  ];
}

/**
 * The OCI config of a task: a read-only mount point at /.taskrouter (helperSkeleton), the
 * exec wrapper bind-mounted read-only at
 * /.taskrouter/exec, the SDKs' filesystem helper at FS_TOOLS_IN_TASK, tini (or a shell loop) as PID 1,
 * the exec agent at AGENT_IN_TASK, or for a runtime without `exec --preserve-fds` (runsc)
 * the status directory of its execs instead.
 */
export function taskConfig(c: TaskConfigInput): OciSpec {
  const mounts: OciMount[] = [
    // First: the helpers below are bound over its mount points (helperSkeleton).
    {
      destination: HELPERS_IN_TASK,
      type: "bind",
      source: join(c.bundle, SKELETON),
      options: ["bind", "ro", "nosuid", "nodev"],
    },
    ...helperMounts(),
  ];
  if (c.flavor.preserveFds) {
    // The task's exec agent (runc-agents.ts): it needs `exec --preserve-fds` for its directory.
    mounts.push({
      destination: AGENT_IN_TASK,
      type: "bind",
      source: nativeHelper("taskrouter-agent"),
      options: ["bind", "ro"],
    });
  } else {
    // Its exec has no --preserve-fds: the wrapper writes exit statuses here.
    mounts.push({
      destination: STATUS_IN_TASK,
      type: "bind",
      source: join(c.bundle, "status"),
      options: ["bind", "rw"],
    });
  }
  if (c.bindTmp) {
    // The task's /tmp stays its rootfs's, where the router sees it (before volumes: one may be below).
    mounts.push({
      destination: "/tmp",
      type: "bind",
      source: join(c.bundle, "rootfs", "tmp"),
      options: ["rbind", "rw"],
    });
  }
  mounts.push(...volumeMounts(c.spec));
  let args: string[];
  if (c.tini) {
    mounts.push({
      destination: INIT_IN_TASK,
      type: "bind",
      source: c.tini,
      options: ["bind", "ro"],
    });
    args = [INIT_IN_TASK, "--", "/bin/sh", "-c", KEEPALIVE];
  } else {
    args = ["/bin/sh", "-c", SHELL_REAPER];
  }
  return buildTaskSpec({
    hostname: c.taskId.slice(0, 63).replace(/[^A-Za-z0-9.-]/g, "-"),
    init: taskProcess({
      args,
      env: { PATH: HOST_PATH, HOME: "/root", LANG: "C.UTF-8" },
      cwd: "/",
    }),
    rootfs: "rootfs",
    cgroupsPath: c.cgroupsPath,
    isolatedNetwork: c.spec.network !== "host",
    memoryBytes: c.spec.memoryBytes,
    cpus: c.spec.cpus,
    pidsLimit: c.spec.pidsLimit,
    extraMounts: mounts,
    seccomp: c.seccomp,
  });
}

/**
 * The task's volumes (TaskSpec.volumes, sorted by path: a parent before what
 * is mounted in it) as bind mounts of their host directories, nosuid and
 * nodev; `ro` ones read-only. Every task that binds one shares the directory
 * (runsc: through its gofer, with `--file-access-mounts=shared`, flavors.ts).
 */
export function volumeMounts(spec: TaskSpec): OciMount[] {
  return (spec.volumes ?? []).map((v) => ({
    destination: v.path,
    type: "bind",
    source: v.source,
    options: ["bind", "nosuid", "nodev", v.readOnly ? "ro" : "rw"],
  }));
}

/** Throws InvalidArgument for a task spec the runc runtime (with OCI runtime `flavor`) cannot run. */
export function checkTaskSpec(spec: TaskSpec, flavor: OciFlavor): void {
  const { memoryBytes: mem, cpus, pidsLimit: pids, network, image } = spec;
  if (image !== undefined && (typeof image !== "string" || image === "")) {
    throw new InvalidArgumentError("image must be a non-empty image id");
  }
  if (mem !== undefined && (!Number.isSafeInteger(mem) || mem < 8 * 1024 * 1024)) {
    throw new InvalidArgumentError("memory must be at least 8 MiB");
  }
  if (cpus !== undefined && !(Number.isFinite(cpus) && cpus >= 0.01 && cpus <= 1024)) {
    throw new InvalidArgumentError("cpus must be between 0.01 and 1024");
  }
  if (pids !== undefined && !flavor.pidsLimit) {
    throw new InvalidArgumentError(
      `pids_limit is not supported with the ${flavor.name} OCI runtime`,
    );
  }
  if (pids !== undefined && (!Number.isSafeInteger(pids) || pids < 8)) {
    throw new InvalidArgumentError("pids_limit must be at least 8 (the task's init uses 3)");
  }
  if (network !== undefined && network !== "none" && network !== "host" && network !== "open") {
    throw new InvalidArgumentError(
      `network must be "none", "open" or "host", not ${JSON.stringify(network)}`,
    );
  }
  if (network === "open" && !flavor.vethNetwork) {
    throw new InvalidArgumentError(
      `network "open" is not supported with the ${flavor.name} OCI runtime: its own network stack would bypass the task's nftables policy`,
    );
  }
}

/**
 * Empties a runsc task's status directory, keeping the directory: the running
 * sandbox has it bind-mounted. The task can write there, so nothing is
 * followed or recursed into: only non-directories are unlinked.
 */
export async function clearStatusDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (!e.isDirectory()) await unlink(join(dir, e.name)).catch(() => undefined);
  }
}
