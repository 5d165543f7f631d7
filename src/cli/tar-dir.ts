import { createReadStream } from "node:fs";
import { lstat, readdir, readlink } from "node:fs/promises";
import { join } from "node:path";
import { pack } from "tar-stream";

/** Bytes a tar of `dir` will take (headers, padded contents, end blocks), for progress. */
export async function tarSize(dir: string): Promise<number> {
  let total = 1024;
  const walk = async (d: string) => {
    for (const name of await readdir(d)) {
      const p = join(d, name);
      const st = await lstat(p);
      total += 512 + (st.isFile() ? Math.ceil(st.size / 512) * 512 : 0);
      if (st.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return total;
}

/**
 * A tar of the tree at `dir` (its content, not `dir` itself), streamed with
 * backpressure: directories, regular files, symlinks (never followed), with
 * modes, owners and mtimes. Sockets, FIFOs and devices are left out.
 */
export async function* tarDirectory(dir: string): AsyncGenerator<Buffer> {
  const p = pack();
  const walk = async (rel: string) => {
    for (const name of (await readdir(join(dir, rel))).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const abs = join(dir, r);
      const st = await lstat(abs);
      const h = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: st.mtime };
      if (st.isDirectory()) {
        p.entry({ ...h, name: `${r}/`, type: "directory" });
        await walk(r);
      } else if (st.isSymbolicLink()) {
        p.entry({ ...h, name: r, type: "symlink", linkname: await readlink(abs) });
      } else if (st.isFile()) {
        const sink = p.entry({ ...h, name: r, type: "file", size: st.size });
        await new Promise<void>((resolve, reject) => {
          const src = createReadStream(abs);
          src.once("error", reject);
          sink.once("error", reject);
          sink.once("finish", () => resolve());
          src.pipe(sink as unknown as NodeJS.WritableStream);
        });
      }
    }
  };
  const feed = walk("").then(
    () => p.finalize(),
    (err: unknown) => p.destroy(err as Error),
  );
  try {
    for await (const chunk of p) yield chunk as Buffer;
  } finally {
    p.destroy();
    await feed;
  }
}
