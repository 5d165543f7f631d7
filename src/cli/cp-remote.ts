import type { RouterClient } from "../client/client.ts";
import { type FileInfo, FsError, type TaskFilesystem } from "../client/fs.ts";
import { quote } from "../limits.ts";
import type { Kind, PlanEntry } from "./cp-paths.ts";
import { printable, under } from "./cp-paths.ts";

/**
 * What is at `path` in the task: a symlink counts as what it points to
 * (ListFiles follows it), a dangling one as a file; an ancestor that is not
 * a directory is an error.
 */
export async function remoteKind(fs: TaskFilesystem, path: string): Promise<Kind> {
  let st: FileInfo;
  try {
    st = await fs.stat(path);
  } catch (err) {
    if (err instanceof FsError && err.errorKind === "NotFound") return "missing";
    throw err;
  }
  if (st.type !== "symlink") return st.type === "directory" ? "dir" : "file";
  try {
    await fs.listFiles(path);
    return "dir";
  } catch (err) {
    if (err instanceof FsError) return "file";
    throw err;
  }
}

/**
 * False for FIFOs, sockets and devices, which the helper reports as "file"
 * (its type has three values): reading one could block forever.
 */
export function isRegularOrLinkOrDir(info: FileInfo): boolean {
  return info.type !== "file" || (info.mode & 0o170000) === 0o100000;
}

/** The entry describing `info` at `rel`. */
export function entryOf(rel: string, info: FileInfo): PlanEntry {
  return {
    rel,
    type: info.type,
    size: info.type === "file" ? info.size : 0,
    perm: info.mode & 0o7777,
    mtime: info.modifiedTime,
    ...(info.symlinkTarget !== null ? { linkTarget: info.symlinkTarget } : {}),
  };
}

/** Linux's PATH_MAX: no path of a real tree below the copy's root is longer. */
const PATH_MAX = 4096;
/** The most entries one copy lists (a replaced helper could list without end). */
const MAX_ENTRIES = 1_000_000;

/**
 * Throws unless `name` (listed in the task's directory `dir`) is one entry's
 * name: not empty, `.` or `..`, without `/` or NUL, not listed twice. What
 * the task's helper answers is hostile (a task may replace the helper): a
 * name like `../x` or `link/x` would otherwise be written outside the copy.
 */
function checkEntryName(name: string, seen: Set<string>, dir: string): void {
  const bad =
    name === "" || name === "." || name === ".." || name.includes("/") || name.includes("\0");
  if (bad || seen.has(name)) {
    throw new Error(
      `the task's filesystem helper listed ${bad ? "an invalid" : "a repeated"} name ${quote(name)} in ${quote(dir)}: refusing the copy`,
    );
  }
  seen.add(name);
}

/** Throws when the listing went past PATH_MAX (path `rel`) or MAX_ENTRIES (`listed`). */
function checkTreeSize(rel: string, listed: number, root: string): void {
  if (Buffer.byteLength(rel) <= PATH_MAX && listed <= MAX_ENTRIES) return;
  const what =
    listed > MAX_ENTRIES
      ? `more than ${MAX_ENTRIES} entries`
      : `a path longer than PATH_MAX (${PATH_MAX} bytes)`;
  throw new Error(
    `the task's filesystem helper listed ${what} under ${quote(root)}: refusing the copy`,
  );
}

/**
 * The tree under the task's directory `root` (pre-order, parents first),
 * listing up to `parallel` directories at a time; symlinks are not followed.
 */
export async function remoteTree(
  fs: TaskFilesystem,
  root: string,
  rootInfo: PlanEntry,
  parallel = 8,
): Promise<PlanEntry[]> {
  const children = new Map<string, PlanEntry[]>();
  let running = 0;
  const waiters: (() => void)[] = [];
  const slot = async () => {
    while (running >= parallel) await new Promise<void>((r) => waiters.push(r));
    running++;
  };
  let failed = false;
  let listed = 0;
  const walk = async (rel: string): Promise<void> => {
    await slot();
    if (failed) {
      running--;
      waiters.shift()?.();
      return;
    }
    let list: FileInfo[];
    try {
      list = await fs.listFiles(under(root, rel));
    } catch (err) {
      failed = true;
      throw err;
    } finally {
      running--;
      waiters.shift()?.();
    }
    const kids: PlanEntry[] = [];
    const seen = new Set<string>();
    for (const i of list) {
      const r = rel ? `${rel}/${i.name}` : i.name;
      try {
        checkEntryName(i.name, seen, under(root, rel));
        checkTreeSize(r, ++listed, root);
      } catch (err) {
        failed = true; // the other walks stop listing
        throw err;
      }
      if (isRegularOrLinkOrDir(i)) kids.push(entryOf(r, i));
      else
        process.stderr.write(
          `taskrouter: cp: skipping ${printable(under(root, r))} (not a regular file)\n`,
        );
    }
    children.set(rel, kids);
    await Promise.all(kids.filter((k) => k.type === "directory").map((k) => walk(k.rel)));
  };
  await walk("");
  const out: PlanEntry[] = [{ ...rootInfo, rel: "" }];
  const emit = (rel: string) => {
    for (const k of children.get(rel) ?? []) {
      out.push(k);
      if (k.type === "directory") emit(k.rel);
    }
  };
  emit("");
  return out;
}

/** Runs `argv` in the task and throws with its stderr when it fails. */
export async function runInTask(client: RouterClient, task: string, argv: string[]): Promise<void> {
  const id = await client.start(task, argv, { stdout: "devnull", stderr: "pipe" });
  await client.writeStdin(task, id, 0, new Uint8Array(), true).catch(() => {});
  const status = await client.wait(task, id);
  if (status.code === 0) return;
  const parts: Buffer[] = [];
  for await (const c of client.read(task, id, "stderr")) parts.push(c);
  const how = status.signal !== undefined ? `signal ${status.signal}` : `exit ${status.code}`;
  const text = Buffer.concat(parts).toString().trim().slice(0, 300);
  throw new Error(`${argv[0]} in the task failed (${how})${text ? `: ${text}` : ""}`);
}

/**
 * Sets permission bits in the task with `chmod` (the helper has no chmod):
 * one call per run of equal modes, files before directories and children
 * before parents (so a read-only directory is made so last).
 */
export async function chmodAll(
  client: RouterClient,
  task: string,
  modes: { path: string; perm: number; dir: boolean }[],
): Promise<void> {
  const order = [...modes.filter((m) => !m.dir), ...modes.filter((m) => m.dir).reverse()];
  let i = 0;
  while (i < order.length) {
    const perm = (order[i] as (typeof order)[number]).perm;
    const batch: string[] = [];
    while (i < order.length && order[i]?.perm === perm && batch.length < 500) {
      batch.push((order[i] as (typeof order)[number]).path);
      i++;
    }
    await runInTask(client, task, ["chmod", perm.toString(8), "--", ...batch]);
  }
}

/** Default permission bits of what the helper creates (umask 022): no chmod needed. */
export function isDefaultPerm(e: PlanEntry): boolean {
  return e.type === "symlink" || e.perm === (e.type === "directory" ? 0o755 : 0o644);
}
