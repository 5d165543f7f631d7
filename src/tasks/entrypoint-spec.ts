import { stat } from "node:fs/promises";
import { isAbsolute, join, posix } from "node:path";
import { FailedPreconditionError, InvalidArgumentError } from "../errors.ts";
import { systemArgMax } from "../exec/exec-request.ts";
import { checkMaxBytes, MAX, quote } from "../limits.ts";
import type { ExitStatus, Runtime } from "../runtime/runtime.ts";
import { readTaskRecord, writeTaskRecord } from "./task-record.ts";

/** A task's main process (`task create -- CMD ARG...`), as asked for. */
export interface EntrypointSpec {
  argv: string[];
  /** Absolute path inside the task; undefined: the task's default directory. */
  workdir: string | undefined;
}

/** What task.json keeps of the entrypoint: the spec, and how it ended once it did. */
export interface EntrypointRecord {
  argv: string[];
  workdir?: string;
  /** Its exit status and when it came (ms since the epoch). */
  exit?: { status: ExitStatus; at: number };
}

/** Linux's limit on one argument string (MAX_ARG_STRLEN). */
const MAX_ARG_STRLEN = 128 * 1024;

/**
 * The entrypoint of a CreateTaskRequest: undefined for an empty argv (with
 * no workdir), else a checked spec. InvalidArgument for an empty argv[0], a
 * NUL byte, an argument over 128 KiB, argv past ARG_MAX, a relative or
 * oversized workdir, or a workdir without a command. Changes nothing.
 */
export function parseEntrypoint(argv: readonly string[], workdir = ""): EntrypointSpec | undefined {
  if (argv.length === 0) {
    if (workdir !== "") throw new InvalidArgumentError("entrypoint_workdir needs an entrypoint");
    return undefined;
  }
  if (argv[0] === "") throw new InvalidArgumentError("entrypoint[0] must not be empty");
  let total = 0;
  for (const [i, a] of argv.entries()) {
    if (a.includes("\0")) throw new InvalidArgumentError(`entrypoint[${i}] contains a NUL byte`);
    const n = Buffer.byteLength(a) + 1;
    if (n > MAX_ARG_STRLEN) {
      throw new InvalidArgumentError(`entrypoint[${i}] is longer than ${MAX_ARG_STRLEN} bytes`);
    }
    total += n + 8;
  }
  if (total > systemArgMax() / 2) {
    throw new InvalidArgumentError(
      `entrypoint takes ${total} bytes, more than half the system's ARG_MAX (${systemArgMax()})`,
    );
  }
  if (workdir !== "") {
    checkMaxBytes("entrypoint_workdir", workdir, MAX.path);
    if (!workdir.startsWith("/") || workdir.includes("\0")) {
      throw new InvalidArgumentError(
        `entrypoint_workdir must be an absolute path: ${quote(workdir, { ends: true })}`,
      );
    }
  }
  return { argv: [...argv], workdir: workdir === "" ? undefined : workdir };
}

/**
 * Checks, before anything starts, that `argv0` can run in task `taskId` from
 * `cwd` (paths inside the task, looked up through the runtime's view of its
 * filesystem, as a shell would: a name with a slash is that file, else the
 * first regular file of that name on PATH). FailedPrecondition naming the
 * reason: a workdir that is missing or not a directory, a program not found
 * or not executable.
 */
export async function checkCanStart(
  runtime: Runtime,
  taskId: string,
  argv0: string,
  cwd: string,
  path: string,
): Promise<void> {
  const host = (p: string) => runtime.resolvePath(taskId, p);
  const wd = await stat(host(cwd)).catch(() => undefined);
  if (!wd?.isDirectory()) {
    throw new FailedPreconditionError(
      `entrypoint cannot start: workdir ${quote(cwd, { ends: true })} ${wd ? "is not a directory" : "does not exist"}`,
    );
  }
  const candidates = argv0.includes("/")
    ? [posix.resolve(cwd, argv0)]
    : path
        .split(":")
        .filter((d) => d !== "")
        .map((d) => join(isAbsolute(d) ? d : posix.resolve(cwd, d), argv0));
  let denied = false;
  for (const file of candidates) {
    const st = await stat(host(file)).catch(() => undefined);
    if (!st || (!st.isFile() && !argv0.includes("/"))) continue;
    if (st.isFile() && (st.mode & 0o111) !== 0) return;
    denied = true;
  }
  throw new FailedPreconditionError(
    `entrypoint cannot start: ${quote(argv0)}: ${denied ? "Permission denied" : "command not found"}`,
  );
}

/**
 * Records how task `id`'s entrypoint ended. Does nothing (and never
 * recreates the dir) once the task was removed.
 */
export async function saveEntrypointExit(
  dataDir: string,
  id: string,
  exit: { status: ExitStatus; at: number },
): Promise<void> {
  const rec = await readTaskRecord(dataDir, id);
  if (!rec?.entrypoint || rec.entrypoint.exit) return;
  rec.entrypoint.exit = exit;
  await writeTaskRecord(dataDir, rec, { existing: true }).catch(() => undefined);
}

/** The record of `spec`. */
export function entrypointRecord(spec: EntrypointSpec): EntrypointRecord {
  return { argv: spec.argv, ...(spec.workdir !== undefined ? { workdir: spec.workdir } : {}) };
}

/** A record read back from task.json (untrusted input): its spec, or undefined when malformed. */
export function specOfRecord(rec: EntrypointRecord | undefined): EntrypointSpec | undefined {
  if (!rec || !Array.isArray(rec.argv) || !rec.argv.every((a) => typeof a === "string")) {
    return undefined;
  }
  if (rec.argv.length === 0) return undefined;
  return { argv: rec.argv, workdir: typeof rec.workdir === "string" ? rec.workdir : undefined };
}
