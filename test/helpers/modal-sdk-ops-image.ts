/**
 * The small image test/modal-sdk-ops.test.ts roots its runc, crun and runsc
 * tasks and their sidecars on: a filesystem snapshot of such a task stores
 * only what the task changed (its upper layer over this image), not this
 * machine's /usr, so it stays fast.
 */
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { copyProgram } from "./images.ts";

/** What /etc/marker holds in the image. */
export const OPS_MARKER = "modal-sdk-ops image\n";

/**
 * The root of the image in `dir`: /bin/sh (dash), cat, sleep, mkdir, mv and
 * rm with their libraries; /etc/marker (OPS_MARKER) and /etc/doomed (a file
 * of the image a task deletes); empty /tmp (1777), /mnt, /srv and /root.
 */
export async function makeOpsImage(dir: string): Promise<void> {
  await copyProgram(dir, "/bin/dash", "/bin/sh");
  for (const p of ["cat", "sleep", "mkdir", "mv", "rm"])
    await copyProgram(dir, `/bin/${p}`, `/bin/${p}`);
  await mkdir(join(dir, "etc"), { recursive: true });
  await writeFile(join(dir, "etc", "marker"), OPS_MARKER);
  await writeFile(join(dir, "etc", "doomed"), "in the image\n");
  for (const d of ["mnt", "srv", "root"]) await mkdir(join(dir, d));
  await mkdir(join(dir, "tmp"));
  await chmod(join(dir, "tmp"), 0o1777);
}
