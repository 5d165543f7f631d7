import { realpathSync } from "node:fs";
import { join, resolve } from "node:path";
import { FailedPreconditionError, InvalidArgumentError, PermissionDeniedError } from "../errors.ts";
import { freezeCgroup } from "../linux/cgroup.ts";
import type { Runtime, TaskFilesystem } from "../runtime/runtime.ts";
import { type BinPath, fromUtf8, show } from "./paths.ts";
import type { TaskFs, TaskFsLookup } from "./service.ts";

/** Kernel filesystems, named in the refusal of a host task's path in them. */
const KERNEL_FS = ["proc", "sys", "dev"];

const splitPath = (p: string): BinPath[] =>
  fromUtf8(p)
    .split("/")
    .filter((c) => c !== "");

/**
 * The TaskFs of a host-runtime task. Its commands see this whole machine,
 * but the image calls are confined to the task's own directory
 * `<data-dir>/tasks/<id>` (its default workdir is `work` in it): request
 * paths are this machine's paths and must lie strictly inside that
 * directory (PermissionDenied otherwise, with a message of their own for
 * /proc, /sys and /dev; the directory itself is InvalidArgument), and are
 * resolved from an open handle of it, so nothing outside it is ever
 * created, mounted over or read. No symlink is followed on the way
 * (InvalidArgument). `dataDirs`: the data dir as configured and
 * as a real path (either prefix is accepted; the first is the real one).
 */
export function hostTaskFs(runtime: string, dataDirs: readonly string[], taskId: string): TaskFs {
  const taskDir = join(dataDirs[0] ?? "/", "tasks", taskId);
  const prefixes = [...new Set(dataDirs)].map((d) => splitPath(join(d, "tasks", taskId)));
  const shown = fromUtf8(taskDir);
  return {
    runtime,
    root: taskDir,
    refuseSymlinks: true,
    requestPrefix: shown,
    localPath: (components) => {
      for (const pre of prefixes) {
        if (!pre.every((c, i) => components[i] === c)) continue;
        if (components.length > pre.length) return components.slice(pre.length);
        throw new InvalidArgumentError(
          `${show(shown)} is the task's own directory: use a directory inside it`,
        );
      }
      const path = `/${components.join("/")}`;
      if (KERNEL_FS.includes(components[0] ?? "")) {
        throw new PermissionDeniedError(
          `${show(path)} is in /proc, /sys or /dev: a host task's directories are mounted and snapshotted only inside its own directory ${show(shown)}`,
        );
      }
      throw new PermissionDeniedError(
        `${show(path)} is outside this task's directory ${show(shown)}: on the host runtime, directories are mounted, unmounted and snapshotted only inside it`,
      );
    },
  };
}

/** What taskFsLookup needs of the tasks (the TaskManager in daemon.ts). */
export interface TaskSource {
  /** The task `taskId` (NotFound when there is none), its state, runtime and containers. */
  get(taskId: string): {
    readonly state: string;
    readonly runtime: Runtime;
    /** The root of running sidecar `id` (NotFound / FailedPrecondition otherwise). */
    readonly containers: { filesystem(id: string): TaskFilesystem };
  };
}

/**
 * The TaskFs of running tasks: what each task's runtime offers of its
 * filesystem (Runtime.taskFilesystem), or for a runtime without one (host)
 * the task's own directory (hostTaskFs).
 */
export function taskFsLookup(tasks: TaskSource, dataDirPath: string): TaskFsLookup {
  const dataDirs = [realpathSync(dataDirPath), resolve(dataDirPath)];
  return (taskId: string, containerId?: string): TaskFs => {
    const task = tasks.get(taskId);
    if (task.state !== "running") {
      throw new FailedPreconditionError(`task ${taskId} is not running (${task.state})`);
    }
    const rt = task.runtime;
    const view = containerId
      ? task.containers.filesystem(containerId)
      : rt.taskFilesystem?.(taskId);
    if (!view) return hostTaskFs(rt.name, dataDirs, taskId);
    const fs: TaskFs = { runtime: rt.name, root: view.root, refuseSymlinks: false };
    const cgroup = view.cgroupsPath;
    if (cgroup) fs.freeze = () => freezeCgroup(cgroup);
    if (view.rootLayers) fs.rootLayers = { ...view.rootLayers };
    if (view.exposeMount) fs.exposeMount = view.exposeMount;
    if (view.hideMount) fs.hideMount = view.hideMount;
    return fs;
  };
}
