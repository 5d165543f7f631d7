import { rmdirSync } from "node:fs";
import { chmod, lstat, mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { cgroupDirs } from "../../linux/cgroup.ts";
import { unmountAll } from "../../linux/mount.ts";
import { mountsUnder } from "../../linux/mountinfo.ts";
import type { TaskSpec } from "../runtime.ts";
import { restoreLayers } from "./checkpoint.ts";
import { copyRootAttrs, existsInside, type ImageRoots } from "./image-roots.ts";
import type { OciCli } from "./oci-cli.ts";
import { hostImage, mountRootfs, type RootfsLayer } from "./rootfs.ts";
import type { RuncLayout } from "./runc-layout.ts";
import type { OciSeccomp } from "./seccomp.ts";
import { clearStatusDir, helperSkeleton, taskConfig } from "./task-config.ts";

/** What the bundles are made with: the runtime's settings for every task. */
export interface TaskBundleSettings {
  cli: OciCli;
  layout: RuncLayout;
  /** The tasks' init (tini), or undefined for the shell reaper loop. */
  tini: string | undefined;
  /** The seccomp filter of tasks created from now on. */
  seccomp: OciSeccomp | undefined;
  /** The images tasks are rooted on (held from `prepare` until `remove`). */
  images: ImageRoots;
}

/**
 * The OCI bundles of runc tasks on disk, `<dataDir>/runc/bundles/<task>/`:
 * config.json, rootfs/ (an overlay over the host image or a stored image),
 * the task's writes (upper/, work/), execs/ and status/.
 *
 * Contract:
 * - `prepare` acquires the task's image before it makes anything (NotFound,
 *   an image without /bin/sh: nothing is made), and is idempotent: an
 *   existing bundle keeps the task's writes; its execs/ and status/ start
 *   empty. With `restore`, the task's files come from that checkpoint.
 * - `remove` unmounts and deletes the bundle, removes the task's cgroup
 *   directories and releases its image; it never deletes a tree that still
 *   has something mounted in it (it throws instead).
 */
export class TaskBundles {
  private hostImage: Promise<RootfsLayer[]> | undefined;

  constructor(private readonly s: TaskBundleSettings) {}

  /** Makes (or adopts) the bundle of `taskId`; returns the task's default working directory. */
  async prepare(
    taskId: string,
    spec: TaskSpec,
    opts: { existing?: boolean; restore?: string },
  ): Promise<string> {
    const { cli, layout } = this.s;
    const bundle = layout.bundle(taskId);
    const layers = spec.image
      ? await this.s.images.acquire(taskId, spec.image, opts.existing === true)
      : undefined;
    await mkdir(bundle, { recursive: true, mode: 0o700 });
    await rm(join(bundle, "execs"), { recursive: true, force: true });
    await mkdir(join(bundle, "execs"), { mode: 0o700 });
    await clearStatusDir(join(bundle, "status"));
    await helperSkeleton(bundle);
    if (opts.restore) await restoreLayers(cli, opts.restore, bundle);
    if (!layers) this.hostImage ??= hostImage(layout.hostImageDir);
    await mountRootfs(bundle, layers ?? (await (this.hostImage as Promise<RootfsLayer[]>)));
    if (layers?.[0] && !opts.existing && !opts.restore)
      await copyRootAttrs(layers[0].lower, layout.rootfs(taskId));
    const bindTmp =
      cli.flavor.ownTmpfsOnTmp &&
      !(spec.volumes ?? []).some((v) => v.path === "/tmp") &&
      (await tmpToBind(layout.rootfs(taskId), opts.existing === true));
    await writeFile(
      join(bundle, "config.json"),
      JSON.stringify(
        taskConfig({
          taskId,
          bundle,
          spec,
          tini: this.s.tini,
          flavor: cli.flavor,
          cgroupsPath: layout.cgroupsPath(taskId),
          seccomp: this.s.seccomp,
          bindTmp,
        }),
        null,
        1,
      ),
    );
    // An image without /root: its commands start in / by default.
    return !layers || existsInside(layout.rootfs(taskId), "/root") ? "/root" : "/";
  }

  /** Deletes the bundle of `taskId` (its container deleted already). */
  async remove(taskId: string): Promise<void> {
    const bundle = this.s.layout.bundle(taskId);
    await unmountAll(bundle);
    // Never remove a tree with something still mounted in it (it could be this machine's files).
    if ((await mountsUnder(bundle)).length > 0) throw new Error(`mounts left under ${bundle}`);
    await rm(bundle, { recursive: true, force: true });
    for (const d of cgroupDirs(this.s.layout.cgroupsPath(taskId)).reverse()) {
      try {
        rmdirSync(d);
      } catch {
        // gone already, or runc removed it
      }
    }
    this.s.images.release(taskId);
  }
}

/**
 * Whether `rootfs`'s /tmp can be bound onto the task's /tmp (OciFlavor.ownTmpfsOnTmp): only a
 * real directory, never a link (the task's own writes, or an image's, could point it anywhere on
 * this machine). A missing one is made first (mode 1777, as gVisor's own would be), except in a
 * bundle being adopted, whose task may be running. For a task that is started from this config
 * (a new one, a restore, or one adopted after its container ended), nothing of it runs between
 * this check and the runtime's mount; an adopted running task never reads the config again.
 */
export async function tmpToBind(rootfs: string, existing: boolean): Promise<boolean> {
  const tmp = join(rootfs, "tmp");
  let st = await lstat(tmp).catch(() => undefined);
  if (!st && !existing) {
    await mkdir(tmp, { mode: 0o700 });
    await chmod(tmp, 0o1777);
    st = await lstat(tmp);
  }
  return st?.isDirectory() === true;
}
