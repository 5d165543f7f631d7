import { existsSync } from "node:fs";
import { chmod, stat, utimes } from "node:fs/promises";
import { FailedPreconditionError } from "../../errors.ts";
import type { ImageResolver } from "../runtime.ts";
import { resolveConfined } from "./confined-path.ts";
import type { RootfsLayer } from "./rootfs.ts";

interface Held {
  id: string;
  dir: string;
  release: () => void;
}

/**
 * The stored images runc tasks use as their root filesystem (`TaskSpec.image`),
 * each held from `acquire` until `release` (task destroyed), so `image rm` and
 * gc leave it alone. Contract: `acquire` makes nothing on failure (NotFound
 * for an unknown image, FailedPrecondition for a new task on an image without
 * `/bin/sh`, which the task's init runs) and is idempotent per task.
 */
export class ImageRoots {
  private resolver: ImageResolver | undefined;
  private readonly held = new Map<string, Held>();

  setResolver(resolve: ImageResolver): void {
    this.resolver = resolve;
  }

  /** Holds `imageId` for `taskId` and returns the task's root layers. */
  async acquire(taskId: string, imageId: string, existing: boolean): Promise<RootfsLayer[]> {
    if (!this.resolver) {
      throw new FailedPreconditionError("this router has no image store for task roots");
    }
    let h = this.held.get(taskId);
    if (h?.id !== imageId) {
      this.release(taskId);
      const got = await this.resolver(imageId, { existing });
      if (!existing && !existsInside(got.dir, "/bin/sh")) {
        got.release();
        throw new FailedPreconditionError(
          `image ${imageId} has no /bin/sh: a task's init needs it (add a shell to the image)`,
        );
      }
      h = { id: imageId, ...got };
      this.held.set(taskId, h);
    }
    return [{ target: "/", lower: h.dir }];
  }

  has(taskId: string): boolean {
    return this.held.has(taskId);
  }

  imageOf(taskId: string): string | undefined {
    return this.held.get(taskId)?.id;
  }

  release(taskId: string): void {
    this.held.get(taskId)?.release();
    this.held.delete(taskId);
  }
}

/**
 * Gives a new task's root (`rootfs`, the overlay's root: its upper directory)
 * the mode and times of the image's root `lower`, as image mounts do.
 */
export async function copyRootAttrs(lower: string, rootfs: string): Promise<void> {
  const st = await stat(lower);
  await chmod(rootfs, st.mode & 0o7777);
  await utimes(rootfs, st.atime, st.mtime);
}

/** Whether `path` exists inside the tree `root` (its symlinks followed inside it); never throws. */
export function existsInside(root: string, path: string): boolean {
  try {
    return existsSync(resolveConfined(root, path));
  } catch {
    return false; // a symlink loop
  }
}
