import { realpathSync } from "node:fs";
import { join } from "node:path";
import { FailedPreconditionError, InvalidArgumentError } from "../errors.ts";
import type { Runtime } from "../runtime/runtime.ts";
import type { TaskManager } from "../tasks/task-manager.ts";
import { freezeCgroup } from "./freeze.ts";
import { type BinPath, show } from "./paths.ts";
import type { TaskFs, TaskFsLookup } from "./service.ts";

/**
 * What a runtime may offer the images service beyond the Runtime interface:
 * the host path of a task's root filesystem (mounts made below it appear in
 * the task, or are placed there by `exposeMount`), its cgroup (to freeze it during snapshots), and whether its root
 * is an overlay over one of our images (incremental filesystem snapshots).
 */
interface RootedRuntime extends Runtime {
  rootfs(taskId: string): string;
  cgroupsPath?(taskId: string): string;
  rootLayers?(taskId: string): { imageId: string; upper: string } | undefined;
  exposeMount?(taskId: string, hostPath: string, root: { dev: number; ino: number }): Promise<void>;
  hideMount?(taskId: string, dev: number): Promise<void>;
}

function isRooted(rt: Runtime): rt is RootedRuntime {
  return typeof (rt as Partial<RootedRuntime>).rootfs === "function";
}

/**
 * On the host runtime a task's filesystem is this whole machine. Safety
 * there means: a request path names exactly the directory used (no symlink
 * anywhere on the way) and never the router's own state: the data dir, a
 * directory holding it, or anything in it except the task's own directory.
 */
export function hostPathGuard(dataDir: string, taskId: string) {
  const taskDir = join(dataDir, "tasks", taskId);
  return (components: readonly BinPath[]): void => {
    const p = Buffer.from(`/${components.join("/")}`, "latin1").toString("utf8");
    const within = (a: string, b: string) => a === b || a.startsWith(`${b}/`);
    if (within(dataDir, p) || (within(p, dataDir) && !within(p, taskDir))) {
      throw new InvalidArgumentError(
        `${show(`/${components.join("/")}`)} is the router's data dir or holds it; use a path outside it (or in the task's own directory)`,
      );
    }
  };
}

/** The TaskFs of running tasks, from the task manager and each task's runtime. */
export function taskFsLookup(tasks: TaskManager, dataDirPath: string): TaskFsLookup {
  const dataDir = realpathSync(dataDirPath);
  return (taskId: string): TaskFs => {
    const task = tasks.get(taskId);
    if (task.state !== "running") {
      throw new FailedPreconditionError(`task ${taskId} is not running (${task.state})`);
    }
    const rt = task.runtime;
    if (!isRooted(rt)) {
      return {
        runtime: rt.name,
        root: "/",
        refuseSymlinks: true,
        checkPath: hostPathGuard(dataDir, taskId),
      };
    }
    const fs: TaskFs = { runtime: rt.name, root: rt.rootfs(taskId), refuseSymlinks: false };
    const cgroup = rt.cgroupsPath?.(taskId);
    if (cgroup) fs.freeze = () => freezeCgroup(cgroup);
    const layers = rt.rootLayers?.(taskId);
    if (layers) fs.rootLayers = layers;
    if (rt.exposeMount) fs.exposeMount = rt.exposeMount.bind(rt, taskId);
    if (rt.hideMount) fs.hideMount = rt.hideMount.bind(rt, taskId);
    return fs;
  };
}
