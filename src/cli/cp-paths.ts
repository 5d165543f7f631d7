import { basename, posix, resolve } from "node:path";

/** One operand of `cp`: a local path, `-` (a tar on stdin/stdout), or TASK:PATH. */
export type CpOperand =
  | { kind: "local"; path: string }
  | { kind: "stdio" }
  | { kind: "task"; task: string; path: string; raw: string };

const TASK_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * Parses an operand as docker cp does: `-` is stdio; a path starting with
 * `/` or `.` is local (so `./a:b` names a local file with a colon); else a
 * colon makes it TASK:PATH, PATH relative to the task's `/` when not
 * absolute.
 */
export function parseOperand(arg: string): CpOperand {
  if (arg === "-") return { kind: "stdio" };
  const colon = arg.indexOf(":");
  if (arg.startsWith("/") || arg.startsWith(".") || colon < 0) return { kind: "local", path: arg };
  const task = arg.slice(0, colon);
  const path = arg.slice(colon + 1);
  if (!TASK_ID.test(task)) {
    throw new Error(
      `bad TASK:PATH ${JSON.stringify(arg)}: ${JSON.stringify(task)} is not a task id`,
    );
  }
  if (path === "") throw new Error(`bad TASK:PATH ${JSON.stringify(arg)}: the path is empty`);
  return { kind: "task", task, path: path.startsWith("/") ? path : `/${path}`, raw: arg };
}

/** A source path split into the path to read and whether only its contents are copied (`DIR/.`). */
export interface SourceSpec {
  path: string;
  /** Ends in `/.`: the directory's contents go into the destination, not the directory. */
  contentsOnly: boolean;
  /** Name the copy gets inside an existing destination directory ("" for `/`). */
  base: string;
}

export function sourceSpec(p: string, local: boolean): SourceSpec {
  const contentsOnly = p === "." || p.endsWith("/.");
  const trimmed = contentsOnly ? p.slice(0, -1) || "." : p;
  const base = local ? basename(resolve(trimmed)) : posix.basename(posix.normalize(trimmed));
  return { path: trimmed, contentsOnly, base: base === "." || base === ".." ? "" : base };
}

export type Kind = "missing" | "dir" | "file";

/**
 * Where the source goes (docker cp's rules):
 * - a file (or symlink) into an existing directory goes in it under its own
 *   name; onto an existing file it replaces it; to a missing path it is
 *   created there (its parent must exist; a trailing `/` demands a directory);
 * - a directory onto an existing directory goes in it under its own name,
 *   or, with `DIR/.`, its contents go in; to a missing path it is created
 *   there with its contents (the parent must exist); onto a file: error.
 */
export async function resolveTarget(
  src: SourceSpec & { isDir: boolean },
  dest: string,
  kindOf: (path: string) => Promise<Kind>,
  show: (path: string) => string,
): Promise<{ target: string; existing: Kind }> {
  const join = (a: string, b: string) => (a.endsWith("/") ? a + b : `${a}/${b}`);
  const kind = await kindOf(dest);
  if (kind === "dir") {
    if (src.isDir && (src.contentsOnly || src.base === "")) return { target: dest, existing: kind };
    if (src.base === "") throw new Error(`cannot copy ${show(src.path)} into a directory`);
    const target = join(dest, src.base);
    const existing = await kindOf(target);
    if (src.isDir && existing === "file") {
      throw new Error(`cannot copy a directory onto a file: ${show(target)}`);
    }
    return { target, existing };
  }
  if (kind === "file") {
    if (src.isDir) throw new Error(`cannot copy a directory onto a file: ${show(dest)}`);
    if (dest.endsWith("/")) throw new Error(`not a directory: ${show(dest)}`);
    return { target: dest, existing: kind };
  }
  if (dest.endsWith("/") && !src.isDir) {
    throw new Error(`no such directory: ${show(dest)}`);
  }
  const parent = posix.dirname(dest.replace(/\/+$/, "") || "/");
  if ((await kindOf(parent)) !== "dir") throw new Error(`no such directory: ${show(parent)}`);
  return { target: dest.replace(/(.)\/+$/, "$1"), existing: kind };
}

/** An entry of a tree to copy, relative to its root ("" is the root itself). */
export interface PlanEntry {
  rel: string;
  type: "file" | "directory" | "symlink";
  size: number;
  /** Permission bits (mode & 0o7777). */
  perm: number;
  /** Modification time, Unix seconds. */
  mtime: number;
  linkTarget?: string;
}

/** Joins a root and an entry's relative path ("" is the root). */
export function under(root: string, rel: string): string {
  if (rel === "") return root;
  return root.endsWith("/") ? root + rel : `${root}/${rel}`;
}

/**
 * Runs `fn` over `items` with at most `limit` at a time; the first failure
 * stops new starts and is rethrown once the running ones settle.
 */
export async function eachLimit<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async () => {
    while (!failure && next < items.length) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure) throw failure.err;
}

/** A tar entry name made safe: no leading `/`, no `.` parts, and `..` refused. */
export function safeRel(name: string): string {
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes(".."))
    throw new Error(`refusing a tar entry outside the destination: ${name}`);
  return parts.join("/");
}

/** Passes `src` through, reporting each chunk's size to `add`. */
export async function* counted<T extends Uint8Array>(
  src: AsyncIterable<T>,
  add: (n: number) => void,
): AsyncGenerator<T> {
  for await (const c of src) {
    add(c.length);
    yield c;
  }
}

/**
 * `text` without terminal control characters (C0, DEL, C1), each shown as
 * `\xNN`: what the task's helper says reaches the user's terminal.
 */
export function printable(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
  const control = /[\u0000-\u001f\u007f-\u009f]/g;
  return text.replace(control, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}
