import { join } from "node:path";
import { nativeHelper } from "../native.ts";
import type { VolumeBind } from "../runtime.ts";
import { wrapArgv } from "./exec-wrapper.ts";
import { buildTaskSpec, type OciMount, type OciSpec, taskProcess } from "./oci-spec.ts";
import type { OciSeccomp } from "./seccomp.ts";
import { helperMounts, volumeMounts } from "./task-config.ts";

/** Where a sidecar's init binary (tini) appears inside it. */
const INIT_IN_SIDECAR = "/.taskrouter/init";
/** The directory of the sidecar's exit status file inside it (`<dir>/status` on the host). */
const STATUS_IN_SIDECAR = "/.taskrouter/status";
/** Where the terminal holder (native/pty-holder.c) appears in a sidecar with a terminal. */
const PTY_IN_SIDECAR = "/.taskrouter/pty";
/** The entrypoint's exit status file (written by the exec wrapper), in the sidecar and below its dir. */
export const SIDECAR_STATUS = { inSidecar: `${STATUS_IN_SIDECAR}/exit`, inDir: "status/exit" };

/** What a sidecar's config.json is made from. */
export interface SidecarConfigInput {
  /** The sidecar's directory (its OCI bundle). */
  dir: string;
  hostname: string;
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  cgroupsPath: string;
  /** The task's network namespace to join (`/proc/<init>/ns/net`); undefined: the host's. */
  netns: string | undefined;
  memoryBytes: number | undefined;
  /** Volumes bound into it (SidecarSpec.volumes), sorted by path. */
  volumes: VolumeBind[];
  /** The host's tini (static), the sidecar's PID 1; undefined: the exec wrapper is PID 1. */
  tini: string | undefined;
  seccomp: OciSeccomp | undefined;
  /** The entrypoint's terminal (SidecarSpec.pty); undefined: none. */
  pty: { rows: number; cols: number } | undefined;
}

/**
 * The OCI config of a sidecar container: its own root (`rootfs`), pid, ipc,
 * uts and mount namespaces, the task's network namespace joined by path.
 * PID 1 is tini (`-g`: signals go to the entrypoint's whole group; orphans
 * are reaped), its child the exec wrapper, which runs the entrypoint and
 * writes its real exit status (`code N` / `signal N`) to SIDECAR_STATUS in a
 * directory of the router's bind-mounted read-write (the sidecar can write
 * there: it can only lie about its own result). Output is discarded (merged,
 * to the init's /dev/null): no RPC reads a sidecar's output, and it must not
 * fill the router's disk. With `pty`, the terminal holder runs between tini
 * and the exec wrapper: it opens a terminal on the sidecar's own devpts, runs
 * the wrapper on it and reads and discards its output (native/pty-holder.c);
 * nothing of it is on the host, so it lives exactly as long as the sidecar.
 * The exec wrapper and the SDKs' filesystem helper are bind-mounted as in
 * tasks, so execs in the sidecar behave as in a task. Volumes are bind
 * mounts as in a task's config (task-config.ts, volumeMounts).
 */
export function sidecarConfig(c: SidecarConfigInput): OciSpec {
  const mounts: OciMount[] = [
    ...helperMounts(),
    {
      destination: STATUS_IN_SIDECAR,
      type: "bind",
      source: join(c.dir, "status"),
      options: ["bind", "rw"],
    },
  ];
  mounts.push(...volumeMounts({ volumes: c.volumes }));
  let wrapped = wrapArgv(c.argv, true, SIDECAR_STATUS.inSidecar);
  if (c.pty) {
    mounts.push({
      destination: PTY_IN_SIDECAR,
      type: "bind",
      source: nativeHelper("taskrouter-pty"),
      options: ["bind", "ro"],
    });
    const size = [String(c.pty.rows), String(c.pty.cols)];
    wrapped = [PTY_IN_SIDECAR, SIDECAR_STATUS.inSidecar, ...size, ...wrapped];
  }
  let args = wrapped;
  if (c.tini) {
    mounts.push({
      destination: INIT_IN_SIDECAR,
      type: "bind",
      source: c.tini,
      options: ["bind", "ro"],
    });
    args = [INIT_IN_SIDECAR, "-g", "--", ...wrapped];
  }
  const spec = buildTaskSpec({
    hostname: c.hostname,
    init: taskProcess({ args, env: c.env, cwd: c.cwd }),
    rootfs: "rootfs",
    cgroupsPath: c.cgroupsPath,
    isolatedNetwork: false,
    memoryBytes: c.memoryBytes,
    extraMounts: mounts,
    seccomp: c.seccomp,
  });
  if (c.netns) spec.linux.namespaces.push({ type: "network", path: c.netns });
  return spec;
}
