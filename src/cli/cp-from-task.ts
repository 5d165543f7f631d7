import { randomBytes } from "node:crypto";
import { once } from "node:events";
import {
  chmod,
  type FileHandle,
  lstat,
  mkdir,
  open,
  rename,
  rm,
  stat,
  symlink,
  truncate,
  unlink,
  utimes,
} from "node:fs/promises";
import { dirname, posix } from "node:path";
import { pipeline } from "node:stream/promises";
import { pack } from "tar-stream";
import { type FileInfo, FsError } from "../client/fs.ts";
import { quote } from "../limits.ts";
import { DirectFileWriter } from "../util/direct-file.ts";
import { preallocate } from "../util/preallocate.ts";
import { holdReplaced } from "../util/release-later.ts";
import type { Kind } from "./cp-paths.ts";
import { counted, eachLimit, resolveTarget, sourceSpec, under } from "./cp-paths.ts";
import { entryOf, isRegularOrLinkOrDir, remoteTree } from "./cp-remote.ts";
import type { CopyContext } from "./cp-to-task.ts";

/** Files at least this large are written around the page cache (src/util/direct-file.ts). */
const DIRECT_FROM = 8 * 1024 * 1024;

/**
 * The task's SRC (a followed symlink is a file or directory), its spec, and
 * a function listing its tree (one ListFiles per directory).
 */
async function remoteSource(ctx: CopyContext, remote: string) {
  const src = sourceSpec(remote, false);
  const show = `${ctx.task}:${src.path}`;
  const info = await ctx.fs.stat(src.path).catch((err: unknown) => {
    if (err instanceof FsError && err.errorKind === "NotFound") {
      throw new Error(`no such file or directory: ${show}`);
    }
    if (err instanceof FsError && err.errorKind === "NotDirectory") {
      throw new Error(`not a directory: ${show}`);
    }
    throw err;
  });
  let root = entryOf("", info);
  if (root.type === "symlink" && (ctx.followLink || src.contentsOnly)) {
    root = entryOf("", await followRemote(ctx, src.path, info));
  }
  if (src.contentsOnly && root.type !== "directory") throw new Error(`not a directory: ${show}`);
  if (!isRegularOrLinkOrDir(info) && root.type === "file") {
    throw new Error(`not a regular file, directory or symlink: ${show}`);
  }
  const plan = () =>
    root.type === "directory" ? remoteTree(ctx.fs, src.path, root) : Promise.resolve([root]);
  return { src, root, plan };
}

/** What a symlink in the task finally points to (Stat of each target in turn). */
async function followRemote(ctx: CopyContext, path: string, link: FileInfo): Promise<FileInfo> {
  let at = path;
  let info = link;
  for (let hops = 0; info.type === "symlink"; hops++) {
    const to = info.symlinkTarget ?? "";
    if (hops >= 40) throw new Error(`too many levels of symbolic links: ${ctx.task}:${path}`);
    at = to.startsWith("/") ? to : posix.join(posix.dirname(at), to);
    try {
      info = await ctx.fs.stat(at);
    } catch (err) {
      if (err instanceof FsError && err.errorKind === "NotFound") {
        throw new Error(`dangling symlink: ${ctx.task}:${path} -> ${to}`);
      }
      throw err;
    }
  }
  return info;
}

async function localKind(p: string): Promise<Kind> {
  try {
    return (await stat(p)).isDirectory() ? "dir" : "file";
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return "missing";
    if (code === "ENOTDIR") throw new Error(`not a directory: ${p}`);
    throw err;
  }
}

/**
 * Writes `content` into `file` (new, nothing written yet) and closes it. A
 * file of DIRECT_FROM bytes or more goes around the page cache where it can
 * (src/util/direct-file.ts); the rest through a write stream, as before.
 */
async function writeNew(
  file: FileHandle,
  size: number,
  content: AsyncIterable<Uint8Array>,
): Promise<void> {
  const direct = size >= DIRECT_FROM ? await DirectFileWriter.open(file) : undefined;
  if (!direct) return pipeline(content, file.createWriteStream()); // the stream closes the file
  let failed = false;
  try {
    for await (const c of content) await direct.write(c);
    await direct.end();
  } catch (err) {
    failed = true;
    await direct.abort().catch(() => {});
    throw err;
  } finally {
    await file.close().catch((err: unknown) => {
      if (!failed) throw err; // else the first error is the one to report
    });
  }
}

/** The permission bits a copy gives a local file or directory: the task's without setuid/setgid. */
const LOCAL_PERM = 0o1777;

/** `src`'s chunks; throws once they pass `max` bytes (the size listed): `what` changed meanwhile. */
async function* atMost(src: AsyncIterable<Uint8Array>, max: number, what: string) {
  let n = 0;
  for await (const c of src) {
    n += c.length;
    if (n > max) throw new Error(`${what} changed while it was copied (more than ${max} bytes)`);
    yield c;
  }
}

/**
 * Makes directory `path` of the copy (its parent made and checked already)
 * and checks it is one: a symlink there (left by an earlier copy of the
 * task's) is refused, never followed.
 */
async function localDir(path: string): Promise<void> {
  await mkdir(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "EEXIST") throw err;
  });
  const st = await lstat(path);
  if (!st.isDirectory()) {
    throw new Error(
      `${quote(path)} is ${st.isSymbolicLink() ? "a symlink" : "not a directory"}: refusing to copy a directory through it`,
    );
  }
}

/** `cp TASK:SRC LOCAL`: a file, symlink or directory tree, by docker cp's rules. */
export async function copyFromTask(ctx: CopyContext, remote: string, local: string): Promise<void> {
  const { src, root, plan: list } = await remoteSource(ctx, remote);
  const { target, existing } = await resolveTarget(
    { ...src, isDir: root.type === "directory" },
    local,
    localKind,
    (p) => p,
  );
  const plan = await list();
  ctx.progress.setTotal(plan.reduce((n, e) => n + e.size, 0));
  for (const e of plan) {
    if (e.type !== "directory") continue;
    // The target (the user's choice) may be reached through links; nothing below it is.
    if (e.rel === "") await mkdir(target, { recursive: true });
    else await localDir(under(target, e.rel));
  }
  await eachLimit(
    plan.filter((e) => e.type !== "directory"),
    ctx.parallel,
    async (e) => {
      const path = under(target, e.rel);
      if (e.type === "symlink") {
        if ((await lstat(path).catch(() => undefined))?.isDirectory() === false) await unlink(path);
        await symlink(e.linkTarget ?? "", path);
        return;
      }
      const tmp = `${dirname(path)}/.taskrouter-cp-${randomBytes(6).toString("hex")}`;
      try {
        // Its blocks allocated before its bytes come: see src/util/preallocate.ts.
        const file = await open(tmp, "wx", 0o600);
        const allocated = preallocate(file.fd, e.size);
        let written = 0;
        const count = (n: number) => {
          written += n;
          ctx.moved(n);
        };
        const from = under(src.path, e.rel);
        const content = atMost(ctx.fs.readFile(from), e.size, `${ctx.task}:${from}`);
        await writeNew(file, e.size, counted(content, count));
        if (allocated && written < e.size) await truncate(tmp, written); // it shrank meanwhile
        await chmod(tmp, e.perm & LOCAL_PERM);
        await utimes(tmp, e.mtime, e.mtime);
        const replaced = await holdReplaced(path);
        try {
          await rename(tmp, path);
        } catch (err) {
          await replaced?.close();
          throw err;
        }
        await replaced?.release();
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
    },
  );
  // Directories last, children before parents: their times and modes (maybe read-only).
  for (const e of plan.filter((d) => d.type === "directory").reverse()) {
    if (e.rel === "" && existing === "dir") continue;
    await utimes(under(target, e.rel), e.mtime, e.mtime);
    await chmod(under(target, e.rel), e.perm & LOCAL_PERM);
  }
}

/**
 * `cp TASK:SRC -`: a tar of SRC on `out`, entries named under SRC's base name
 * (`SRC/.`: its contents at the top), with modes, times and owner names.
 * A file whose size changed between listing and reading is an error.
 */
export async function packFromTask(
  ctx: CopyContext,
  remote: string,
  out: NodeJS.WritableStream,
): Promise<void> {
  const { src, plan: list } = await remoteSource(ctx, remote);
  const plan = await list();
  const prefix = src.contentsOnly ? "" : src.base;
  ctx.progress.setTotal(plan.reduce((n, e) => n + e.size, 0));
  const p = pack();
  const sent = pipeline(p, out);
  sent.catch(() => {});
  try {
    for (const e of plan) {
      const name = prefix && e.rel ? `${prefix}/${e.rel}` : prefix || e.rel;
      if (name === "") continue;
      const h = { name, mode: e.perm, mtime: new Date(e.mtime * 1000) };
      if (e.type === "directory") p.entry({ ...h, name: `${name}/`, type: "directory" });
      else if (e.type === "symlink")
        p.entry({ ...h, type: "symlink", linkname: e.linkTarget ?? "" });
      else {
        const sink = p.entry({ ...h, type: "file", size: e.size });
        const finished = once(sink, "finish");
        const from = `${ctx.task}:${under(src.path, e.rel)}`;
        let n = 0;
        for await (const c of atMost(ctx.fs.readFile(under(src.path, e.rel)), e.size, from)) {
          n += c.length;
          ctx.moved(c.length);
          if (!sink.write(c)) await once(sink, "drain");
        }
        if (n !== e.size) {
          throw new Error(`${from} changed while it was copied`);
        }
        sink.end(undefined);
        await finished;
      }
    }
    p.finalize();
  } catch (err) {
    p.destroy(err as Error);
    throw err;
  }
  await sent;
}
