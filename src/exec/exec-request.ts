import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { InvalidArgumentError, PermissionDeniedError } from "../errors.ts";
import { checkMaxBytes, MAX, quote } from "../limits.ts";

/** A pseudo-terminal request (see SPEC, PTY). */
export interface PtyOptions {
  rows: number;
  cols: number;
  term: string;
  colorterm: string;
  termProgram: string;
  noTerminateOnIdleStdin: boolean;
}

/**
 * One source of environment variables of an exec: a stored secret (resolved
 * by the router) or inline pairs (plaintext secrets: kept in memory only,
 * never logged, persisted or echoed). Sources apply in order; a later one
 * wins on a duplicate key.
 */
export type EnvSource = { secretId: string } | { env: Readonly<Record<string, string>> };

/** A request to start a command in a task, in domain terms (no protobuf). */
export interface ExecRequest {
  execId: string;
  argv: string[];
  stdout: "pipe" | "devnull";
  stderr: "pipe" | "devnull" | "stdout";
  /** Seconds; 0 or undefined: no timeout. */
  timeoutSecs: number | undefined;
  /** Absolute path inside the task; undefined: the task's default directory. */
  workdir: string | undefined;
  /** Env vars over the task's base environment, in order (see EnvSource). */
  envSources: EnvSource[];
  /** The container to run in: "" for the task's main one. */
  containerId: string;
  pty: PtyOptions | undefined;
  runtimeDebug: boolean;
}

/** Names an inline env var may have (what the SDKs let through). */
const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Linux's limit on one argument string (MAX_ARG_STRLEN). */
const MAX_ARG_STRLEN = 128 * 1024;
let argMax: number | undefined;

/** The system's ARG_MAX (argv + environment bytes for execve), read once. */
export function systemArgMax(): number {
  if (argMax === undefined) {
    try {
      argMax = Number.parseInt(execFileSync("getconf", ["ARG_MAX"], { encoding: "utf8" }), 10);
    } catch {
      argMax = 2 * 1024 * 1024;
    }
    if (!Number.isFinite(argMax) || argMax <= 0) argMax = 2 * 1024 * 1024;
  }
  return argMax;
}

/**
 * Checks the ids and the path of a request against the documented limits
 * (src/limits.ts): exec_id (non-empty), container_id, secret ids, workdir.
 * InvalidArgument past one; the message quotes only the start of a value.
 */
export function checkExecIds(req: ExecRequest): void {
  if (req.execId === "") throw new InvalidArgumentError("exec_id must not be empty");
  checkMaxBytes("exec_id", req.execId, MAX.execId);
  checkMaxBytes("container_id", req.containerId, MAX.containerId);
  for (const src of req.envSources) {
    if ("secretId" in src) checkMaxBytes("secret id", src.secretId, MAX.secretName);
  }
  if (req.workdir !== undefined) checkMaxBytes("workdir", req.workdir, MAX.path);
}

/** A request's `workdir` (of an exec or a sidecar), when set: absolute, no NUL (InvalidArgument). */
export function checkWorkdir(workdir: string | undefined): void {
  if (workdir === undefined) return;
  if (!workdir.startsWith("/")) {
    throw new InvalidArgumentError(
      `workdir must be an absolute path: ${quote(workdir, { ends: true })}`,
    );
  }
  if (workdir.includes("\0")) {
    throw new InvalidArgumentError(`workdir ${quote(workdir, { ends: true })} contains a NUL byte`);
  }
}

/**
 * A terminal request (`pty_info` with `enabled`, of an exec or a sidecar):
 * sizes 1-65535 (0 on the wire was already made 24x80), TERM, COLORTERM and
 * TERM_PROGRAM without NUL. InvalidArgument otherwise.
 */
export function checkPty(pty: PtyOptions): void {
  for (const [field, v] of [
    ["winsz_rows", pty.rows],
    ["winsz_cols", pty.cols],
  ] as const) {
    if (!Number.isInteger(v) || v < 1 || v > 65535) {
      throw new InvalidArgumentError(`pty_info.${field} must be 0 (24x80) or 1-65535, not ${v}`);
    }
  }
  for (const [field, v] of [
    ["env_term", pty.term],
    ["env_colorterm", pty.colorterm],
    ["env_term_program", pty.termProgram],
  ] as const) {
    if (v.includes("\0")) {
      throw new InvalidArgumentError(`pty_info.${field} ${quote(v)} contains a NUL byte`);
    }
  }
}

/**
 * Checks what can be checked without the task: ids (checkExecIds), argv (non-empty, no NUL,
 * within ARG_MAX together with `env`), inline env, workdir (checkWorkdir), the
 * terminal (checkPty), and the features this build does not serve yet. Throws InvalidArgument / Unimplemented, or PermissionDenied for
 * `runtime_debug` unless `opts.allowRuntimeDebug`; changes nothing.
 */
export function validateExecRequest(
  req: ExecRequest,
  env: Record<string, string>,
  opts: { allowRuntimeDebug?: boolean | undefined } = {},
): void {
  checkExecIds(req);
  checkArgv(req.argv, env, "command_args");
  checkInlineEnv(req.envSources);
  checkWorkdir(req.workdir);
  if (req.pty) checkPty(req.pty);
  if (req.runtimeDebug && !opts.allowRuntimeDebug) {
    throw new PermissionDeniedError(
      "runtime_debug is not allowed on this router (start it with serve --allow-runtime-debug)",
    );
  }
}

/**
 * Checks an argv given as request field `field`: non-empty, no NUL, each
 * argument within MAX_ARG_STRLEN and all of it together with `env` within
 * the system's ARG_MAX. InvalidArgument otherwise.
 */
export function checkArgv(argv: string[], env: Record<string, string>, field: string): void {
  if (argv.length === 0) throw new InvalidArgumentError(`${field} must not be empty`);
  if (argv[0] === "") throw new InvalidArgumentError(`${field}[0] must not be empty`);
  let total = 0;
  for (const [i, a] of argv.entries()) {
    if (a.includes("\0")) throw new InvalidArgumentError(`${field}[${i}] contains a NUL byte`);
    const n = Buffer.byteLength(a) + 1;
    if (n > MAX_ARG_STRLEN) {
      throw new InvalidArgumentError(`${field}[${i}] is longer than ${MAX_ARG_STRLEN} bytes`);
    }
    total += n + 8;
  }
  for (const [k, v] of Object.entries(env))
    total += Buffer.byteLength(k) + Buffer.byteLength(v) + 10;
  if (total > systemArgMax()) {
    throw new InvalidArgumentError(
      `${field} and environment take ${total} bytes, more than the system's ARG_MAX (${systemArgMax()})`,
    );
  }
}

/** Inline env sources: names must match ENV_KEY, values must have no NUL (InvalidArgument). */
export function checkInlineEnv(sources: readonly EnvSource[]): void {
  for (const src of sources) {
    if (!("env" in src)) continue;
    for (const [k, v] of Object.entries(src.env)) {
      if (!ENV_KEY.test(k)) {
        throw new InvalidArgumentError(
          `env var name ${quote(k)} is invalid (must match ${ENV_KEY.source})`,
        );
      }
      if (v.includes("\0")) {
        throw new InvalidArgumentError(`env var ${quote(k)} contains a NUL byte`);
      }
    }
  }
}

/**
 * A stable string that is equal for two requests exactly when they ask for
 * the same thing (a hash: inline env values are not kept in it).
 */
export function fingerprint(req: ExecRequest): string {
  const sources = req.envSources.map((s) =>
    "env" in s
      ? Object.entries(s.env).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      : s.secretId,
  );
  const text = JSON.stringify([
    req.argv,
    req.stdout,
    req.stderr,
    req.timeoutSecs ?? 0,
    req.workdir ?? null,
    sources,
    req.containerId,
    req.pty ?? null,
    req.runtimeDebug,
  ]);
  return createHash("sha256").update(text).digest("base64");
}
