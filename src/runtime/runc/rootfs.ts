import { existsSync, lstatSync, readlinkSync } from "node:fs";
import { chmod, mkdir, readlink, symlink } from "node:fs/promises";
import { join } from "node:path";
import { makeShared, mountOverlay } from "../../linux/mount.ts";
import { mountInfo } from "../../linux/mountinfo.ts";

/**
 * One overlay of a task's root filesystem: `lower` (read-only, shared by
 * every task of the image) seen at `target` inside the task, with the task's
 * writes in its own upper layer.
 */
export interface RootfsLayer {
  /** Path inside the task; "/" is the root layer and comes first. */
  target: string;
  /** Directory on this machine, never written. */
  lower: string;
}

/** The system directories of the `host` image: this machine's own, read-only. */
const HOST_SYSTEM_DIRS = ["usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/** Empty directories of the root layer (mode), so a task finds the usual places. */
const SKELETON_DIRS: [string, number][] = [
  ["tmp", 0o1777],
  ["root", 0o700],
  ["home", 0o755],
  ["dev", 0o755],
  ["proc", 0o555],
  ["sys", 0o555],
  ["run", 0o755],
  ["mnt", 0o755],
  ["opt", 0o755],
  ["srv", 0o755],
  ["var", 0o755],
  ["var/tmp", 0o1777],
  [".taskrouter", 0o755],
  ["__modal", 0o755],
  ["__modal/.bin", 0o755],
];

/**
 * The `host` image: a skeleton root under `dir` (empty standard directories,
 * plus this machine's /bin, /lib... symlinks when they are symlinks) and one
 * layer per real system directory (/usr, /etc, ...). Nothing else of this
 * machine is in it: not the data dir, /root, /home, /var, /run or /tmp.
 */
export async function hostImage(dir: string): Promise<RootfsLayer[]> {
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const layers: RootfsLayer[] = [{ target: "/", lower: dir }];
  for (const [d, mode] of SKELETON_DIRS) {
    await mkdir(join(dir, d), { recursive: true });
    await chmod(join(dir, d), mode);
  }
  for (const name of HOST_SYSTEM_DIRS) {
    const host = `/${name}`;
    const st = lstatIf(host);
    if (!st) continue;
    const mine = join(dir, name);
    if (st.isSymbolicLink()) {
      const target = readlinkSync(host);
      if ((await readlink(mine).catch(() => undefined)) !== target) {
        await symlink(target, mine);
      }
    } else if (st.isDirectory()) {
      await mkdir(mine, { recursive: true, mode: 0o755 });
      layers.push({ target: host, lower: host });
    }
  }
  return layers;
}

function lstatIf(p: string) {
  try {
    return lstatSync(p);
  } catch {
    return undefined;
  }
}

/** Host paths of a task's rootfs and layer directories, under its bundle. */
export function layerDirs(bundle: string, target: string) {
  const name = target === "/" ? "_root" : target.slice(1).replaceAll("/", "_");
  return {
    mountPoint: target === "/" ? join(bundle, "rootfs") : join(bundle, "rootfs", target),
    upper: join(bundle, "upper", name),
    work: join(bundle, "work", name),
  };
}

/**
 * Mounts a task's root filesystem at `<bundle>/rootfs`: each layer an overlay
 * (lower: the image, upper/work: the task's own), the root layer first. The
 * root mount is made shared so mounts made below it later (by this router)
 * propagate into the running task. Layers already mounted (a previous router
 * left them) are kept: idempotent.
 */
export async function mountRootfs(bundle: string, layers: RootfsLayer[]): Promise<void> {
  const mounted = new Set((await mountInfo()).map((m) => m.mountPoint));
  for (const layer of layers) {
    const d = layerDirs(bundle, layer.target);
    await mkdir(d.upper, { recursive: true, mode: 0o755 });
    await mkdir(d.work, { recursive: true, mode: 0o700 });
    if (mounted.has(d.mountPoint)) continue;
    if (!existsSync(d.mountPoint)) await mkdir(d.mountPoint, { recursive: true, mode: 0o755 });
    await mountOverlay(d.mountPoint, { lower: layer.lower, upper: d.upper, work: d.work });
    if (layer.target === "/") await makeShared(d.mountPoint);
  }
}
