import { createHash } from "node:crypto";
import { lstat, readdir, readFile, readlink } from "node:fs/promises";
import { join } from "node:path";

/** What a test compares of one entry of a tree. */
export interface TreeEntry {
  type: "dir" | "file" | "symlink" | "other";
  mode: number;
  uid: number;
  gid: number;
  /** sha256 of a file's content (hex). */
  sha?: string;
  target?: string;
  /** Files and symlinks: mtime in microseconds. */
  mtimeUs?: number;
}

/**
 * Every entry under `root` (relative paths, "." for the root itself), never
 * following symlinks. `withTimes` adds mtimes of files and symlinks.
 */
export async function readTree(
  root: string,
  opts: { withTimes?: boolean } = {},
): Promise<Record<string, TreeEntry>> {
  const out: Record<string, TreeEntry> = {};
  const walk = async (rel: string) => {
    const abs = rel === "." ? root : join(root, rel);
    const st = await lstat(abs, { bigint: true });
    const e: TreeEntry = {
      type: st.isDirectory()
        ? "dir"
        : st.isFile()
          ? "file"
          : st.isSymbolicLink()
            ? "symlink"
            : "other",
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
    };
    if (e.type === "file")
      e.sha = createHash("sha256")
        .update(await readFile(abs))
        .digest("hex");
    if (e.type === "symlink") e.target = await readlink(abs);
    if (opts.withTimes && e.type !== "dir") e.mtimeUs = Number((st.mtimeNs + 500n) / 1000n);
    out[rel] = e;
    if (e.type === "dir") {
      for (const name of (await readdir(abs)).sort()) {
        await walk(rel === "." ? name : join(rel, name));
      }
    }
  };
  await walk(".");
  return out;
}
