import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

/**
 * Writes a tree of `files` files totalling about `bytes` under `root`: 100
 * files a directory, each with distinct content (a random base, offset per
 * file, and the file's index up front) so no two blobs deduplicate.
 */
export async function generateTree(root: string, files: number, bytes: number): Promise<void> {
  const size = Math.max(16, Math.floor(bytes / files));
  const base = randomBytes(size + 4096);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < files; i = next++) {
      const dir = join(root, `d${Math.floor(i / 100)}`);
      await mkdir(dir, { recursive: true });
      const off = i % 4096;
      const buf = Buffer.from(base.subarray(off, off + size));
      buf.writeUInt32BE(i, 0);
      await writeFile(join(dir, `f${i}`), buf);
    }
  };
  await mkdir(root, { recursive: true });
  await Promise.all(Array.from({ length: 8 }, worker));
}
