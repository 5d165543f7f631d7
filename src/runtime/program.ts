import { accessSync, constants as fsConstants, statSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { Writable } from "node:stream";
import type { Proc } from "./runtime.ts";

/** Where program `name` is, or why a shell could not run it. */
export type ProgramLookup = { file: string } | { code: 126 | 127; reason: string };

/**
 * Looks `name` up as a shell does before exec: a name with a slash is that
 * file (relative to `cwd`), a bare name the first regular file of that name
 * on `path` (directories skipped). Found but not executable: 126 "Permission
 * denied"; not found: 127 "command not found".
 */
export function lookupProgram(name: string, path: string, cwd = "/"): ProgramLookup {
  const candidates = name.includes("/")
    ? [isAbsolute(name) ? name : resolve(cwd, name)]
    : path
        .split(":")
        .filter((d) => d !== "")
        .map((d) => join(isAbsolute(d) ? d : resolve(cwd, d), name));
  let denied = false;
  for (const file of candidates) {
    const st = statSync(file, { throwIfNoEntry: false });
    // A PATH search skips directories, as a shell does; an explicit path cannot run one.
    if (!st || (!st.isFile() && !name.includes("/"))) continue;
    try {
      if (!st.isFile()) throw new Error("not a file");
      accessSync(file, fsConstants.X_OK);
      return { file };
    } catch {
      denied = true;
    }
  }
  return denied
    ? { code: 126, reason: "Permission denied" }
    : { code: 127, reason: "command not found" };
}

/** The Proc of a program that could not be started (see the Proc contract). */
export function notStartedProc(reason: string, code: number): Proc {
  return {
    pid: undefined,
    stdin: new Writable({ write: (_chunk, _enc, done) => done() }),
    stdout: null,
    stderr: null,
    exited: Promise.resolve({ code }),
    startError: reason,
    signalGroup() {},
    resize() {},
  };
}
