import { lstat, readdir, readlink, stat } from "node:fs/promises";
import { join } from "node:path";
import { extract } from "tar-stream";
import type { RouterClient } from "../client/client.ts";
import type { TaskFilesystem } from "../client/fs.ts";
import { fileSource, type SeekableSource } from "../client/stdin-stream.ts";
import type { ProgressLine } from "../util/progress.ts";
import {
  counted,
  eachLimit,
  type PlanEntry,
  resolveTarget,
  safeRel,
  sourceSpec,
  under,
} from "./cp-paths.ts";
import { chmodAll, isDefaultPerm, remoteKind, runInTask } from "./cp-remote.ts";

export interface CopyContext {
  client: RouterClient;
  fs: TaskFilesystem;
  task: string;
  /** Follow a symlink given as the source. */
  followLink: boolean;
  progress: ProgressLine;
  /** Counts `n` more bytes moved (negative: a resume went back) on the progress line. */
  moved: (n: number) => void;
  /** Files copied at a time. */
  parallel: number;
}

/** `cp LOCAL TASK:DEST`: a file, symlink or directory tree, by docker cp's rules. */
export async function copyToTask(ctx: CopyContext, local: string, dest: string): Promise<void> {
  const src = sourceSpec(local, true);
  const st = await (ctx.followLink ? stat : lstat)(src.path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") throw new Error(`no such file or directory: ${local}`);
    if (err.code === "ENOTDIR") throw new Error(`not a directory: ${local}`);
    throw err;
  });
  if (src.contentsOnly && !st.isDirectory()) throw new Error(`not a directory: ${local}`);
  if (!st.isDirectory() && !st.isFile() && !st.isSymbolicLink()) {
    throw new Error(`not a regular file, directory or symlink: ${local}`);
  }
  const { target } = await resolveTarget(
    { ...src, isDir: st.isDirectory() },
    dest,
    (p) => remoteKind(ctx.fs, p),
    (p) => `${ctx.task}:${p}`,
  );
  const root: PlanEntry = {
    rel: "",
    type: st.isDirectory() ? "directory" : st.isSymbolicLink() ? "symlink" : "file",
    size: st.isFile() ? st.size : 0,
    perm: st.mode & 0o7777,
    mtime: st.mtimeMs / 1000,
  };
  if (root.type === "symlink") root.linkTarget = await readlink(src.path);
  const plan = root.type === "directory" ? await localTree(src.path, root) : [root];
  ctx.progress.setTotal(plan.reduce((n, e) => n + e.size, 0));
  await applyPlan(ctx, plan, target, (e) => fileSource(join(src.path, e.rel)));
}

/** The tree under the local directory `dir` (pre-order), symlinks not followed; others skipped. */
async function localTree(dir: string, root: PlanEntry): Promise<PlanEntry[]> {
  const out: PlanEntry[] = [root];
  const walk = async (rel: string) => {
    for (const name of (await readdir(join(dir, rel))).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = await lstat(join(dir, r));
      const base = { rel: r, perm: st.mode & 0o7777, mtime: st.mtimeMs / 1000, size: 0 };
      if (st.isDirectory()) {
        out.push({ ...base, type: "directory" });
        await walk(r);
      } else if (st.isSymbolicLink()) {
        out.push({ ...base, type: "symlink", linkTarget: await readlink(join(dir, r)) });
      } else if (st.isFile()) {
        out.push({ ...base, type: "file", size: st.size });
      } else {
        process.stderr.write(
          `taskrouter: cp: skipping ${join(dir, r)} (not a file, directory or link)\n`,
        );
      }
    }
  };
  await walk("");
  return out;
}

/**
 * Creates `plan` under `target` in the task: the leaf directories (MakeDirectory
 * with parents makes the rest), then files (WriteFile, `parallel` at a time)
 * and symlinks (`ln -s`, the helper has none), then non-default modes (`chmod`).
 */
async function applyPlan(
  ctx: CopyContext,
  plan: PlanEntry[],
  target: string,
  sourceOf: (e: PlanEntry) => SeekableSource,
): Promise<void> {
  const dirs = plan.filter((e) => e.type === "directory");
  const parents = new Set(dirs.filter((d) => d.rel !== "").map((d) => parentRel(d.rel)));
  const leaves = dirs.filter((d) => !parents.has(d.rel));
  await eachLimit(leaves, ctx.parallel, (d) => ctx.fs.makeDirectory(under(target, d.rel)));
  await eachLimit(
    plan.filter((e) => e.type !== "directory"),
    ctx.parallel,
    async (e) => {
      const path = under(target, e.rel);
      if (e.type === "symlink") {
        await runInTask(ctx.client, ctx.task, ["ln", "-sfn", "--", e.linkTarget ?? "", path]);
        return;
      }
      const src = sourceOf(e);
      let pos = 0;
      await ctx.fs.writeFile(path, {
        readFrom: async function* (offset) {
          ctx.moved(offset - pos);
          pos = offset;
          for await (const c of src.readFrom(offset)) {
            pos += c.length;
            ctx.moved(c.length);
            yield c;
          }
        },
      });
    },
  );
  await setModes(ctx, plan, target);
}

async function setModes(ctx: CopyContext, plan: PlanEntry[], target: string): Promise<void> {
  const modes = plan
    .filter((e) => !isDefaultPerm(e))
    .map((e) => ({ path: under(target, e.rel), perm: e.perm, dir: e.type === "directory" }));
  await chmodAll(ctx.client, ctx.task, modes);
}

/**
 * `cp - TASK:DEST`: extracts a tar from `input` into the task's existing
 * directory DEST, entry by entry (files stream straight into WriteFile;
 * hard links are made with `ln`; devices and FIFOs are skipped).
 */
export async function extractToTask(
  ctx: CopyContext,
  input: NodeJS.ReadableStream,
  dest: string,
): Promise<void> {
  if ((await remoteKind(ctx.fs, dest)) !== "dir") {
    throw new Error(`the destination of a tar must be an existing directory: ${ctx.task}:${dest}`);
  }
  const ex = extract();
  input.once("error", (err: Error) => ex.destroy(err));
  input.pipe(ex as unknown as NodeJS.WritableStream);
  const seen: PlanEntry[] = [];
  // Directories that exist (ln needs its parent; WriteFile and MakeDirectory make theirs).
  const dirs = new Set([""]);
  const parentOf = async (rel: string) => {
    const parent = parentRel(rel);
    if (!dirs.has(parent)) await ctx.fs.makeDirectory(under(dest, parent));
    dirs.add(parent);
  };
  for await (const entry of ex) {
    const h = entry.header;
    const rel = safeRel(h.name);
    const path = under(dest, rel);
    const e: PlanEntry = {
      rel,
      type: "file",
      size: 0,
      perm: (h.mode ?? 0o644) & 0o7777,
      mtime: (h.mtime?.getTime() ?? 0) / 1000,
    };
    if (h.type === "directory") {
      if (rel !== "") {
        await ctx.fs.makeDirectory(path);
        dirs.add(rel);
        seen.push({ ...e, type: "directory" });
      }
    } else if (h.type === "file" || h.type === "contiguous-file") {
      await ctx.fs.writeFile(
        path,
        counted(entry as unknown as AsyncIterable<Uint8Array>, ctx.moved),
      );
      dirs.add(parentRel(rel));
      seen.push({ ...e, size: h.size ?? 0 });
    } else if (h.type === "symlink") {
      await parentOf(rel);
      await runInTask(ctx.client, ctx.task, ["ln", "-sfn", "--", h.linkname ?? "", path]);
    } else if (h.type === "link") {
      const to = under(dest, safeRel(h.linkname ?? ""));
      await parentOf(rel);
      await runInTask(ctx.client, ctx.task, ["ln", "-f", "--", to, path]);
    } else {
      process.stderr.write(`taskrouter: cp: skipping ${h.name} (${h.type})\n`);
    }
    entry.resume();
  }
  await setModes(ctx, seen, dest);
}

function parentRel(rel: string): string {
  const i = rel.lastIndexOf("/");
  return i < 0 ? "" : rel.slice(0, i);
}
