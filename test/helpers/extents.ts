import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { promisify } from "node:util";

/**
 * Whether the file's data waits for its blocks (ext4's delayed allocation,
 * `filefrag -v`'s `delalloc` flag): true, false, or undefined when that
 * cannot be told here (no filefrag, a filesystem without FIEMAP).
 */
export async function delayedAllocation(path: string): Promise<boolean | undefined> {
  try {
    const { stdout } = await promisify(execFile)("filefrag", ["-v", path]);
    if (!/extents? found/.test(stdout)) return undefined;
    return /\bdelalloc\b/.test(stdout);
  } catch {
    return undefined;
  }
}

/**
 * Why files in `dir` cannot show whether their blocks were allocated ahead
 * (a fresh plain write there is not pending delayed allocation: another
 * filesystem, no filefrag, or writeback came first), or undefined when they
 * can.
 */
export async function delallocUnobservable(dir: string): Promise<string | undefined> {
  const probe = `${dir}/.delalloc-probe`;
  await writeFile(probe, Buffer.alloc(1 << 20, 1));
  const d = await delayedAllocation(probe);
  if (d === undefined) return `filefrag cannot describe files in ${dir}`;
  if (!d)
    return `a plain write in ${dir} is not pending delayed allocation (not ext4, or written back)`;
  return undefined;
}
