import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { unmountAll } from "../../linux/mount.ts";
import { runTool } from "../../util/run-tool.ts";
import type { VolumeBind } from "../runtime.ts";

/** Where a sidecar's volume sources are staged, below its directory. */
const STAGE = "volumes";

/**
 * Binds each volume's source at `<dir>/volumes/<i>` on this machine (a
 * private mount: nothing propagates to or from it) and returns the binds
 * with those paths as sources, for the sidecar's config. Why: a source may
 * name an open directory (`/proc/<pid>/fd/N`, a sub_path opened without
 * following links, SidecarSpec.volumes), and the kernel binds only from a
 * mount of the caller's own mount namespace, which runc's (the container's)
 * is not; mount(8) runs in the router's, binds exactly the directory the
 * path names (`--no-canonicalize`: the link is not turned into a path
 * first), and runc then binds a path of the router's own. Undone by
 * `unstageVolumes` once the container made its mounts (or failed).
 */
export async function stageVolumes(
  dir: string,
  volumes: readonly VolumeBind[],
): Promise<VolumeBind[]> {
  const staged: VolumeBind[] = [];
  for (const [i, v] of volumes.entries()) {
    const at = join(dir, STAGE, String(i));
    await mkdir(at, { recursive: true, mode: 0o700 });
    await runTool("mount", ["--no-canonicalize", "--bind", "--make-private", v.source, at]);
    staged.push({ ...v, source: at });
  }
  return staged;
}

/**
 * Detaches the staged sources (stageVolumes) and removes their directories:
 * the running container keeps its own binds of them (private: the unmount
 * does not reach it). Safe to repeat.
 */
export async function unstageVolumes(dir: string): Promise<void> {
  await unmountAll(join(dir, STAGE));
  await rm(join(dir, STAGE), { recursive: true, force: true });
}
