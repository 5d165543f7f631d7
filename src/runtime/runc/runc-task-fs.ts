import { FailedPreconditionError } from "../../errors.ts";
import type { TaskFilesystem } from "../runtime.ts";
import { layerDirs } from "./rootfs.ts";
import type { RuncLayout } from "./runc-layout.ts";
import { exposeMount, hideMount } from "./task-mounts.ts";

/** What a runc task's filesystem needs of the runtime. */
export interface RuncTaskFsHost {
  layout: RuncLayout;
  /** The OCI runtime propagates mounts into tasks by itself (`OciFlavor.seesHostMounts`). */
  seesHostMounts: boolean;
  /** The pid of the task's init on this machine, while it runs. */
  initPid(taskId: string): number | undefined;
  /** The stored image the task is rooted on, if any. */
  imageOf(taskId: string): string | undefined;
}

/**
 * For an image-rooted task: the image and the task's writable layer
 * (incremental snapshots); undefined for a task on the host image.
 */
export function runcRootLayers(
  host: RuncTaskFsHost,
  taskId: string,
): { imageId: string; upper: string } | undefined {
  const imageId = host.imageOf(taskId);
  return imageId ? { imageId, upper: layerDirs(host.layout.bundle(taskId), "/").upper } : undefined;
}

/**
 * The root filesystem of runc task `taskId` (Runtime.taskFilesystem): its
 * bundle's rootfs/, its cgroup, its layers when image-rooted, and mounts
 * made below the root placed into (and removed from) the running task's
 * mount namespace through its init (task-mounts.ts), unless the OCI runtime
 * propagates them by itself. `exposeMount` is FailedPrecondition once the
 * task's init is gone; `hideMount` then does nothing.
 */
export function runcTaskFilesystem(host: RuncTaskFsHost, taskId: string): TaskFilesystem {
  const root = host.layout.rootfs(taskId);
  const fs: TaskFilesystem = {
    root,
    cgroupsPath: host.layout.cgroupsPath(taskId),
    exposeMount: async (hostPath, rootDir) => {
      if (host.seesHostMounts) return;
      const pid = host.initPid(taskId);
      if (pid === undefined) throw new FailedPreconditionError(`task ${taskId} is not running`);
      await exposeMount(pid, root, hostPath, rootDir);
    },
    hideMount: async (dev) => {
      const pid = host.initPid(taskId);
      if (!host.seesHostMounts && pid !== undefined) await hideMount(pid, dev);
    },
  };
  const layers = runcRootLayers(host, taskId);
  return layers ? { ...fs, rootLayers: layers } : fs;
}
