import { execFile } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);

/** The OCI runtimes told apart, by the first word of their `--version`. */
export type OciFlavorName = "runc" | "crun" | "runsc";

/**
 * What one OCI runtime can do, where they differ. They share runc's command
 * line; every difference the runc runtime cares about is a field here, and
 * code consults these fields, never the runtime's name. runsc (gVisor) runs
 * a task's processes in its own kernel, which is behind most of its fields.
 */
export interface OciFlavor {
  readonly name: OciFlavorName;
  /**
   * `exec --preserve-fds`: the exec wrapper's report comes back on fd 3.
   * false: the wrapper writes it to a file in a status directory
   * bind-mounted into the task (task-config.ts), which the router reads.
   */
  readonly preserveFds: boolean;
  /**
   * A terminal comes through `exec --console-socket` (relayed by
   * native/console-relay.c) instead of `exec --tty`.
   */
  readonly consoleSocketPty: boolean;
  /** `exec --tty` passes its own terminal's size changes on to the task's terminal. */
  readonly relaysResize: boolean;
  /**
   * The task's processes are not the host's to signal: the pid file gives
   * the process's pid inside the task (`--internal-pid-file`), and a signal
   * runs the exec wrapper's kill in the task (`exec TASK ... -k SIG PGID`).
   */
  readonly killsInTask: boolean;
  /**
   * An OOM kill in the task ends the whole sandbox: an exec that ends
   * without a report while the task's OOM count grew was SIGKILLed.
   */
  readonly oomEndsSandbox: boolean;
  /**
   * The task sees mounts the router makes below its rootfs on the host by
   * itself (runsc's file server with `--file-access=shared`): nothing is
   * placed into or removed from its mount namespace (task-mounts.ts).
   */
  readonly seesHostMounts: boolean;
  /** A task may have a pids limit (gVisor's sandbox counts its own host processes against it). */
  readonly pidsLimit: boolean;
  /**
   * How much earlier an exec with a timeout is killed, ms (Runtime.timeoutLeadMs):
   * measured, a killed exec's `runsc exec` exits 20-130 ms after the kill (2 cores, loaded).
   */
  readonly timeoutLeadMs: number;
  /**
   * Container ids are names shared by the whole host (runsc names its
   * sandboxes' control sockets after them): they carry the data dir's tag.
   */
  readonly hostWideIds: boolean;
  /** Global flags of every call (runsc ignores linux.seccomp without `--oci-seccomp`). */
  readonly globalFlags: readonly string[];
  /**
   * Flags of `run` for the task's network ("none": loopback only) and file
   * access; empty: the config's network namespace decides (runsc sets up the
   * sandbox's network itself).
   */
  runFlags(network: "none" | "host"): string[];
  /**
   * Refuses to start any container on a hybrid cgroup host whose cgroup2
   * mount has controllers (crun 1.8): it is run with them hidden (cgroup.ts).
   */
  readonly refusesHybridV2Controllers: boolean;
  /**
   * The task's packets go through this machine's kernel in the container's
   * network namespace, so `--network open` (a veth, NAT, and an nftables
   * policy in that namespace: runtime/network/) works. runsc: gVisor's own
   * network stack would send them past the namespace's nftables.
   */
  readonly vethNetwork: boolean;
  /** Another container can join a task's network namespace by path (sidecars, runc/sidecars.ts). */
  readonly sidecars: boolean;
  /**
   * Puts a tmpfs of its own on the task's /tmp unless a mount of the config
   * has /tmp as its destination or the rootfs's /tmp has files (gVisor: also
   * when /tmp is missing, and through a link to an empty directory). Files
   * there would not be on the host, where the router resolves a task's paths
   * (an exec's workdir, a snapshot's directory, a mount's target), so such a
   * task gets its rootfs's /tmp bound onto /tmp instead (task-config.ts,
   * task-bundles.ts `tmpToBind`).
   */
  readonly ownTmpfsOnTmp: boolean;
  /**
   * `delete --force` of a running container signals its init, then polls
   * until the init is reaped, not merely dead: by this machine's init (the
   * container's init is an orphan of `run --detach`), which may reap orphans
   * seconds late (a VM's init). The router then kills the init itself and
   * deletes once it has died (OciCli.deleteForce): a stopped container is
   * deleted at once. crun does not wait; runsc's wait is for its sandbox's
   * own processes (`reapedByHelper`).
   */
  readonly deleteAwaitsReap: boolean;
  /**
   * `run`/`restore --detach` leave processes of the container running on
   * this machine (runsc's sandbox and gofer) whose reaping `delete` polls
   * for: those commands run under native/reaper.c, a subreaper that reaps
   * them the moment they exit (OciCli.startDetached).
   */
  readonly reapedByHelper: boolean;
}

const RUNC: OciFlavor = {
  name: "runc",
  preserveFds: true,
  consoleSocketPty: false,
  relaysResize: true,
  killsInTask: false,
  oomEndsSandbox: false,
  seesHostMounts: false,
  pidsLimit: true,
  timeoutLeadMs: 0,
  hostWideIds: false,
  globalFlags: [],
  runFlags: () => [],
  refusesHybridV2Controllers: false,
  vethNetwork: true,
  sidecars: true,
  ownTmpfsOnTmp: false,
  deleteAwaitsReap: true,
  reapedByHelper: false,
};

/** The capability record of each OCI runtime (unknown ones are treated as runc). */
export const OCI_FLAVORS: Readonly<Record<OciFlavorName, OciFlavor>> = {
  runc: RUNC,
  crun: {
    ...RUNC,
    name: "crun",
    relaysResize: false,
    refusesHybridV2Controllers: true,
    deleteAwaitsReap: false,
  },
  runsc: {
    name: "runsc",
    preserveFds: false,
    consoleSocketPty: true,
    relaysResize: true,
    killsInTask: true,
    oomEndsSandbox: true,
    seesHostMounts: true,
    pidsLimit: false,
    timeoutLeadMs: 200,
    hostWideIds: true,
    globalFlags: ["--oci-seccomp"],
    // Shared file access for the root and (explicitly, it is the default) for bind mounts:
    // the task sees what the router and other tasks write there (volumes).
    runFlags: (network) => [
      `--network=${network}`,
      "--file-access=shared",
      "--file-access-mounts=shared",
    ],
    refusesHybridV2Controllers: false,
    vethNetwork: false,
    sidecars: false,
    ownTmpfsOnTmp: true,
    deleteAwaitsReap: false,
    reapedByHelper: true,
  },
};

/** Which runtime `binary` is, from the first word of its `--version` (runc when unknown). */
export async function ociFlavor(binary: string): Promise<OciFlavor> {
  const { stdout } = await run(binary, ["--version"]).catch(() => ({ stdout: "" }));
  const name = stdout.trim().split(/\s+/)[0] ?? "";
  return name === "crun" || name === "runsc" ? OCI_FLAVORS[name] : RUNC;
}
