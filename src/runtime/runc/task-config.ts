import { join } from "node:path";
import { HOST_PATH } from "../host/host-runtime.ts";
import type { TaskSpec } from "../runtime.ts";
import { EXEC_IN_TASK, nativeHelper } from "./exec-wrapper.ts";
import type { OciFlavor } from "./oci-cli.ts";
import { buildTaskSpec, type OciMount, type OciSpec, taskProcess } from "./oci-spec.ts";

/** The init's reaper loop when no tini is installed: `wait` reaps every child, orphans too. */
const SHELL_REAPER = 'trap "exit 0" TERM; while :; do sleep 3600 & wait; done';
/** tini's child: a loop that a stray `kill` of its sleep does not end. */
const KEEPALIVE =
  'trap "" HUP INT QUIT TERM USR1 USR2 PIPE ALRM; while :; do sleep 2147483647; done';
/** Where the init binary appears inside a task. */
const INIT_IN_TASK = "/.taskrouter/init";
/** Where tini may be installed (the static one first: it works in any image). */
export const TINI_CANDIDATES = ["/usr/bin/tini-static", "/usr/bin/tini"];
/** runsc: the directory the exec wrapper writes statuses to (`<bundle>/status` on the host). */
const STATUS_IN_TASK = "/.taskrouter/status";

/** The task's path of the status file of exec `name` (runsc; see taskConfig). */
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
}

/**
 * The OCI config of a task: the exec wrapper bind-mounted read-only at
 * /.taskrouter/exec, tini (or a shell loop) as PID 1, and for runsc the
 * status directory of its execs (its exec has no --preserve-fds).
 */
export function taskConfig(c: TaskConfigInput): OciSpec {
  const mounts: OciMount[] = [
    {
      destination: EXEC_IN_TASK,
      type: "bind",
      source: nativeHelper("taskrouter-exec"),
      options: ["bind", "ro"],
    },
  ];
  if (c.flavor === "runsc") {
    // Its exec has no --preserve-fds: the wrapper writes exit statuses here.
    mounts.push({
      destination: STATUS_IN_TASK,
      type: "bind",
      source: join(c.bundle, "status"),
      options: ["bind", "rw"],
    });
  }
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
  });
}
