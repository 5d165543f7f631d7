// What a task's filesystem is made of (images, volumes) and what a runtime offers of it.

/** A volume directory of this machine bind-mounted into a task (src/volumes/). */
export interface VolumeBind {
  /** The volume's name (kept for listings; the runtime mounts `source`). */
  name: string;
  /** Its directory on this machine. */
  source: string;
  /** Where the task sees it: an absolute, normalized path, checked already. */
  path: string;
  readOnly: boolean;
}

/**
 * What a runtime offers of a task's own root filesystem to the rest of the
 * router (the image service's TaskMountDirectory and snapshots, wired in
 * daemon.ts). Runtimes whose tasks have no root of their own (host: its
 * commands see this whole machine) offer none. Everything here is about a
 * running task.
 */
export interface TaskFilesystem {
  /**
   * The host path of the task's root filesystem: the task's `/`. Mounts made
   * below it show in the task (the runtime propagates them, or `exposeMount`
   * places them).
   */
  readonly root: string;
  /** The task's cgroup (an OCI cgroupsPath), frozen during snapshots; absent: none. */
  readonly cgroupsPath?: string;
  /**
   * Present when the root is an overlay over stored image `imageId` with the
   * task's writes in host directory `upper` (a snapshot then stores only
   * what the task changed).
   */
  readonly rootLayers?: { readonly imageId: string; readonly upper: string };
  /**
   * Makes a mount made below `root` visible in the running task when the
   * runtime did not propagate it: `hostPath` is its root directory, `dev`
   * and `ino` identify that directory (it is the task's to replace).
   * Absent: nothing to do.
   */
  exposeMount?(hostPath: string, rootDir: { dev: number; ino: number }): Promise<void>;
  /**
   * Removes from the running task what is left of a mount of device `dev`
   * that the router detached below `root`. Absent: nothing to do.
   */
  hideMount?(dev: number): Promise<void>;
}

/**
 * Finds stored image `imageId` (NotFound when absent) and holds it until
 * `release`: `dir` is its unpacked tree, never written. `existing`: for a
 * task created by an earlier router (an expired image still on disk is fine).
 * The image service provides it (`ImageService.acquireUnpacked`).
 */
export type ImageResolver = (
  imageId: string,
  opts: { existing: boolean },
) => Promise<{ dir: string; release: () => void }>;
