import { lstat, mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { FailedPreconditionError } from "../errors.ts";

/** Which directory a volume's files are in (its identity: the same dir while both match). */
export interface VolumeDirId {
  dev: number;
  ino: number;
}

/**
 * Where volumes keep their files, and what makes a task's mount of one show
 * its latest state. The store (volume-store.ts) keeps the names and records;
 * a backend only the data. Tasks bind-mount `hostDir(name)` (the runc
 * runtime, TaskSpec.volumes), so every backend presents a volume as a
 * directory of this machine: the local backend is one; a network filesystem
 * backend would be a mount of the remote volume there.
 *
 * Contract: `create` makes an empty volume (whatever an earlier one of the
 * name left is gone) and returns its directory's identity; `remove` deletes
 * the files, following no symlink the tasks made, and is safe to repeat;
 * `prune` removes the files of every volume not in `keep` (leftovers of a
 * create or remove that a crash cut short); `reload` brings what tasks see
 * of the volume up to its latest committed state (TaskReloadVolumes) and
 * throws FailedPrecondition when it cannot (naming the volume).
 */
export interface VolumeBackend {
  /** The backend's name ("local"), for records and listings. */
  readonly kind: string;
  create(name: string): Promise<VolumeDirId>;
  /** The host directory tasks bind-mount; it exists once `create` returned. */
  hostDir(name: string): string;
  /** Bytes the volume's files take on disk (a walk that follows no symlink). */
  size(name: string): Promise<number>;
  /** `id`: the directory `create` returned (what the mounts of running tasks show). */
  reload(name: string, id: VolumeDirId): Promise<void>;
  remove(name: string): Promise<void>;
  prune(keep: ReadonlySet<string>): Promise<void>;
}

/**
 * Volumes as directories of this machine: `<root>/<name>` (mode 0755,
 * owned by root, like a Docker volume). Tasks that mount one share the very
 * directory, so a write by one task is seen by the others at once, through
 * the kernel (runc, crun) or gVisor's gofer in shared file access (runsc):
 * there is nothing to fetch on reload. Reload checks that the directory is
 * still the one tasks mounted: one removed or replaced behind the router's
 * back is FailedPrecondition (a running task's bind mount keeps the old one).
 */
export class LocalVolumeBackend implements VolumeBackend {
  readonly kind = "local";

  constructor(private readonly root: string) {}

  hostDir(name: string): string {
    return join(this.root, name);
  }

  async create(name: string): Promise<VolumeDirId> {
    const dir = this.hostDir(name);
    await this.remove(name);
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    await mkdir(dir, { mode: 0o755 });
    const st = await lstat(dir);
    return { dev: st.dev, ino: st.ino };
  }

  async size(name: string): Promise<number> {
    let total = 0;
    const walk = async (dir: string): Promise<void> => {
      const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
      for (const e of entries) {
        const p = join(dir, e.name);
        const st = await lstat(p).catch(() => undefined);
        if (!st) continue; // removed by a task meanwhile
        total += st.blocks * 512;
        if (st.isDirectory()) await walk(p);
      }
    };
    await walk(this.hostDir(name));
    return total;
  }

  async reload(name: string, id: VolumeDirId): Promise<void> {
    const st = await lstat(this.hostDir(name)).catch(() => undefined);
    // The inode alone: a device number may change when the filesystem is mounted again.
    if (!st?.isDirectory() || st.ino !== id.ino) {
      throw new FailedPreconditionError(
        `volume ${name}: its directory was removed or replaced outside the router; ` +
          "running tasks still see the old one (terminate and recreate them)",
      );
    }
  }

  async remove(name: string): Promise<void> {
    // rm does not follow symlinks: a link a task made to this machine's files is only unlinked.
    await rm(this.hostDir(name), { recursive: true, force: true });
  }

  async prune(keep: ReadonlySet<string>): Promise<void> {
    for (const name of await readdir(this.root).catch(() => [])) {
      if (!keep.has(name)) await this.remove(name);
    }
  }
}
