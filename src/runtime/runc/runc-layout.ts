import { createHash } from "node:crypto";
import { join } from "node:path";
import { UNSAFE_MOUNT_PATH } from "../../linux/mount.ts";
import type { OciFlavor } from "./flavors.ts";

/** Directories a task must never see through the host image. */
const EXPOSED = ["/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/**
 * Where the runc runtime keeps its tasks under `<dataDir>/runc/` and how the
 * OCI runtime knows them (see RuncRuntime for the layout).
 *
 * Contract: naming only, nothing is read or made on disk. Container ids (on
 * OCI runtimes whose ids are host-wide) and cgroup paths carry a tag derived
 * from the data dir, so routers with different data dirs never share one.
 */
export class RuncLayout {
  /** `<dataDir>/runc`. */
  readonly base: string;
  /** A short hash of the data dir. */
  readonly tag: string;

  /** `dataDir`: a real path, accepted by `checkDataDir`. */
  constructor(
    dataDir: string,
    private readonly flavor: OciFlavor,
  ) {
    this.base = join(dataDir, "runc");
    this.tag = createHash("sha256").update(dataDir).digest("hex").slice(0, 10);
  }

  /** The OCI runtime's --root (its container state). */
  static stateDir(dataDir: string): string {
    return join(dataDir, "runc", "state");
  }

  /** The skeleton root of the host image. */
  get hostImageDir(): string {
    return join(this.base, "images", "host");
  }

  /** Where the tasks' bundles are. */
  get bundlesDir(): string {
    return join(this.base, "bundles");
  }

  /** The task's OCI bundle directory. */
  bundle(taskId: string): string {
    return join(this.bundlesDir, taskId);
  }

  /** The host path of the task's root filesystem (mounts made below it show in the task). */
  rootfs(taskId: string): string {
    return join(this.bundle(taskId), "rootfs");
  }

  /**
   * The task's container id: the task id, or `<tag>-<task id>` where ids
   * are shared by the whole host (`OciFlavor.hostWideIds`: routers with
   * different data dirs must not share ids).
   */
  containerId(taskId: string): string {
    return this.flavor.hostWideIds ? `${this.tag}-${taskId}` : taskId;
  }

  /** The task's cgroup path (OCI cgroupsPath). */
  cgroupsPath(taskId: string): string {
    return `/taskrouter/${this.tag}-${taskId}`;
  }
}

/**
 * Throws when the real data dir path `real` cannot hold the runtime's tasks:
 * characters a mount option cannot carry, or a place tasks see through the
 * host image.
 */
export function checkDataDir(real: string): void {
  if (UNSAFE_MOUNT_PATH.test(real)) {
    throw new Error(`runc runtime: the data dir path must not contain , : \\ or spaces: ${real}`);
  }
  for (const d of EXPOSED) {
    if (real === d || real.startsWith(`${d}/`)) {
      throw new Error(`runc runtime: the data dir ${real} is inside ${d}, which tasks see`);
    }
  }
}
