import { lstatSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { FailedPreconditionError } from "../../errors.ts";
import { quote } from "../../limits.ts";

const MAX_SYMLINKS = 40;

/**
 * Resolves `path` (absolute, as a process whose root is `root` sees it) to a
 * path on this machine below `root`, following symlinks the way the kernel
 * would inside a chroot: an absolute link target restarts at `root`, and `..`
 * never climbs above it. Components that do not exist are kept as they are
 * (the caller's stat then reports them missing). FailedPrecondition naming
 * `path` after 40 links (a loop the task made: ELOOP for a process in it).
 *
 * This guards the router against a task that plants a symlink such as
 * `/root/x -> /etc` or `../../..` to make the router look at (or mount over)
 * its own files. A task that swaps a component while this runs can still
 * race it; callers that mount use the result at once.
 */
export function resolveConfined(root: string, path: string): string {
  if (!path.startsWith("/")) throw new Error(`not an absolute path: ${path}`);
  const done: string[] = [];
  let todo = path.split("/").filter((c) => c !== "" && c !== ".");
  let links = 0;
  while (todo.length > 0) {
    const c = todo.shift() as string;
    if (c === "..") {
      done.pop();
      continue;
    }
    const host = join(root, ...done, c);
    let isLink = false;
    try {
      isLink = lstatSync(host).isSymbolicLink();
    } catch {
      // Missing: keep the rest as it is.
      done.push(c, ...todo.filter((x) => x !== ".."));
      return join(root, ...done);
    }
    if (!isLink) {
      done.push(c);
      continue;
    }
    if (++links > MAX_SYMLINKS) {
      throw new FailedPreconditionError(
        `${quote(path, { ends: true })} cannot be resolved: too many levels of symbolic links (a symlink loop)`,
      );
    }
    const target = readlinkSync(host);
    const parts = target.split("/").filter((x) => x !== "" && x !== ".");
    if (target.startsWith("/")) done.length = 0;
    todo = [...parts, ...todo];
  }
  return join(root, ...done);
}
