import type { ExitStatus } from "../runtime.ts";

/**
 * The program every exec runs as inside the task, ahead of the command:
 * `/.taskrouter/exec MERGE ARGV...`, a static binary built from
 * native/exec-wrapper.c (by `npm ci`, see native/build.sh) and bind-mounted
 * read-only into every task, so it runs in any image. `runc exec` reports a
 * command killed by signal n as exit code 128+n, the same as `exit 128+n`;
 * the wrapper is the command's parent inside the task, so it sees the real
 * wait status and writes it (`code N` or `signal N`) to fd 3, a file of the
 * router's that the runtime passes in (`--preserve-fds 1`) and the command
 * never inherits. It also makes itself a process-group leader, ignores
 * catchable signals (the command gets the defaults back), merges stderr into
 * stdout when MERGE is 1, reports a program that cannot start as 127/126 the
 * way the host runtime does, and closes its own stdio after the fork (see
 * the C source for the details).
 */
export const EXEC_IN_TASK = "/.taskrouter/exec";

/**
 * The argv that runs `argv` under the wrapper; with `statusFile` (a path in
 * the task) the status goes there instead of to fd 3; with `deadline` (ms
 * since the epoch) the wrapper SIGKILLs the exec's group at that time.
 */
export function wrapArgv(
  argv: string[],
  merge: boolean,
  statusFile?: string,
  deadline?: number,
): string[] {
  const status = statusFile === undefined ? [] : ["-s", statusFile];
  const timer = deadline === undefined ? [] : ["-t", String(Math.floor(deadline))];
  return [EXEC_IN_TASK, ...status, ...timer, merge ? "1" : "0", ...argv];
}

/** The argv, run in the task, that sends signal number `sig` to process group `pgid`. */
export function killArgv(sig: number, pgid: number): string[] {
  return [EXEC_IN_TASK, "-k", String(sig), String(pgid)];
}

/** Parses the wrapper's report (`code N` / `signal N`), or undefined when there is none. */
export function parseWrapperStatus(text: string): ExitStatus | undefined {
  const m = /^(code|signal) (\d+)\n/.exec(text);
  if (!m) return undefined;
  const n = Number(m[2]);
  return m[1] === "signal" ? { signal: n } : { code: n };
}

/**
 * The exit status of an exec whose wrapper left no report: it was killed
 * (its whole group was: SIGKILL from a timeout or task teardown) or the
 * runtime failed before starting it. `runc exec` exits with 128+n when the
 * wrapper died of signal n.
 */
export function statusWithoutReport(runtimeExit: ExitStatus): ExitStatus {
  if (runtimeExit.signal !== undefined) return runtimeExit;
  const c = runtimeExit.code;
  if (c > 128 && c < 128 + 65) return { signal: c - 128 };
  return { code: c };
}
