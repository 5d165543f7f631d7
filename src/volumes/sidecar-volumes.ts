import { FailedPreconditionError } from "../errors.ts";
import type { VolumeBind } from "../runtime/runtime.ts";
import { checkSubPath, type OpenSubDir, openSubPath } from "./sub-path.ts";
import { checkMountRequests } from "./validate.ts";
import type { VolumeStore } from "./volume-store.ts";

/** A volume to mount in a sidecar (TaskContainerCreate.volume_mounts), as the client asked. */
export interface SidecarVolumeRequest {
  /** `volume_id`: the name of one of the router's volumes. */
  name: string;
  /** `mount_path`: absolute path in the sidecar (checked as `task create --volume` paths). */
  path: string;
  readOnly: boolean;
  /** A directory of the volume to mount instead of its root (relative); undefined or "": the root. */
  subPath: string | undefined;
  /** `allow_background_commits`: accepted; a local volume has no commits (a no-op). */
  backgroundCommits: boolean;
}

/** What a sidecar's record keeps of one of its mounts. */
export interface SidecarVolume {
  name: string;
  path: string;
  readOnly: boolean;
  /** Set when a directory of the volume is mounted rather than its root. */
  subPath?: string;
  /** The inode of that directory when it was mounted (TaskReloadVolumes checks it). */
  subIno?: number;
}

/** Volumes held for a sidecar being started (SidecarVolumes.attach). */
export interface AttachedVolumes {
  /** For the sidecar's record. */
  volumes: SidecarVolume[];
  /** For the runtime (SidecarSpec.volumes): sources are valid until `close`. */
  binds: VolumeBind[];
  /** Closes what `binds` name (once the runtime made its mounts). Does not release the hold. */
  close(): void;
}

/**
 * The volumes of sidecar containers (the TaskContainers' collaborator). A
 * sidecar holds its volumes (refusing `volume rm`) from `attach`, or
 * `adopt` after a router restart, until `release`; removing its task
 * releases its sidecars' holds too (TaskVolumes.release).
 */
export interface SidecarVolumes {
  /**
   * Holds `mounts` (checked by checkSidecarMounts) for sidecar `ctrId` of
   * `taskId`, all or none: NotFound for an unknown volume; FailedPrecondition
   * for a sub_path that is missing, not a directory or has a symlink on its
   * way (nothing held or open then).
   */
  attach(taskId: string, ctrId: string, mounts: readonly SidecarVolumeRequest[]): AttachedVolumes;
  /** Holds again the volumes of a running sidecar an earlier router started (gone ones: warned). */
  adopt(taskId: string, ctrId: string, volumes: readonly SidecarVolume[]): void;
  /** Lets the volumes of sidecar `ctrId` go (it ended: its container and mounts are gone). */
  release(taskId: string, ctrId: string): void;
  /**
   * TaskReloadVolumes for a sidecar: each volume as for a task
   * (VolumeStore.reload), and a sub_path still the directory it mounted
   * (FailedPrecondition when replaced or gone: the bind keeps the old one).
   */
  reload(volumes: readonly SidecarVolume[]): Promise<void>;
}

/**
 * Checks a sidecar's `volume_mounts` before anything is made, as `task
 * create --volume` (names, paths, at most 32, no volume at two paths, one
 * per path) plus sub_path (checkSubPath). InvalidArgument otherwise.
 * Returns them sorted by path (a parent before what is mounted inside it).
 */
export function checkSidecarMounts(
  mounts: readonly SidecarVolumeRequest[],
): SidecarVolumeRequest[] {
  checkMountRequests(mounts);
  for (const m of mounts) if (m.subPath) checkSubPath(m.subPath);
  return [...mounts].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** For a router without volumes: a sidecar with one is refused, nothing is held. */
export const NO_SIDECAR_VOLUMES: SidecarVolumes = {
  attach(_t, _c, mounts) {
    if (mounts.length > 0) throw new FailedPreconditionError("this router keeps no volumes");
    return { volumes: [], binds: [], close: () => {} };
  },
  adopt: () => {},
  release: () => {},
  reload: async () => {},
};

/** Who holds a sidecar's volumes in the store: `<task id>+<container id>` ('+' is in no task id). */
export function sidecarHolder(taskId: string, ctrId: string): string {
  return `${taskId}+${ctrId}`;
}

/** SidecarVolumes over the router's volume store. */
export class StoreSidecarVolumes implements SidecarVolumes {
  constructor(
    private readonly store: VolumeStore,
    private readonly warn: (msg: string) => void = () => {},
  ) {}

  attach(taskId: string, ctrId: string, mounts: readonly SidecarVolumeRequest[]): AttachedVolumes {
    const holder = sidecarHolder(taskId, ctrId);
    const roots = this.store.hold(
      holder,
      mounts.map((m) => m.name),
    );
    const opened: OpenSubDir[] = [];
    const close = () => {
      for (const o of opened) o.close();
    };
    try {
      const volumes: SidecarVolume[] = [];
      const binds: VolumeBind[] = [];
      mounts.forEach((m, i) => {
        const v: SidecarVolume = { name: m.name, path: m.path, readOnly: m.readOnly };
        let source = roots[i] as string;
        if (m.subPath) {
          const dir = openSubPath(source, checkSubPath(m.subPath), m.name);
          opened.push(dir);
          source = dir.path;
          v.subPath = m.subPath;
          v.subIno = dir.ino;
        }
        volumes.push(v);
        binds.push({ name: m.name, source, path: m.path, readOnly: m.readOnly });
      });
      return { volumes, binds, close };
    } catch (err) {
      close();
      this.store.release(holder);
      throw err;
    }
  }

  adopt(taskId: string, ctrId: string, volumes: readonly SidecarVolume[]): void {
    const missing = this.store.adopt(
      sidecarHolder(taskId, ctrId),
      volumes.map((v) => v.name),
    );
    for (const name of missing) {
      this.warn(
        `task ${taskId}, sidecar ${ctrId}: its volume ${name} no longer exists (the sidecar keeps its mount)`,
      );
    }
  }

  release(taskId: string, ctrId: string): void {
    this.store.release(sidecarHolder(taskId, ctrId));
  }

  async reload(volumes: readonly SidecarVolume[]): Promise<void> {
    for (const v of volumes) {
      await this.store.reload(v.name);
      if (!v.subPath) continue;
      let ino: number | undefined;
      try {
        const dir = openSubPath(this.store.hostDir(v.name), checkSubPath(v.subPath), v.name);
        ino = dir.ino;
        dir.close();
      } catch (err) {
        if (!(err instanceof FailedPreconditionError)) throw err; // gone, or no longer a directory
      }
      if (ino !== v.subIno) {
        throw new FailedPreconditionError(
          `volume ${v.name}: its directory ${v.subPath} was removed or replaced since the sidecar mounted it; ` +
            "the sidecar still sees the old one (terminate and recreate it)",
        );
      }
    }
  }
}
