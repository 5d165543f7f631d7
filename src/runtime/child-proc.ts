import type { ChildProcess } from "node:child_process";
import { constants } from "node:os";
import type { Readable, Writable } from "node:stream";
import type { ExitStatus, Proc } from "./runtime.ts";
import type { Spawned } from "./spawner.ts";

/** How a runtime reports a process that never started. */
export interface StartFailure {
  /** The `startError` text shown to the client. */
  message: string;
  /** The exit code `exited` resolves with. */
  code: number;
}

/**
 * Wraps a pipe-based `ChildProcess` spawned with `detached: true` (so its pid
 * is also its process group id) and `stdin: "pipe"` as a `Proc`:
 * - `exited` resolves with `{ signal }` (signal number; 9 if unknown) or
 *   `{ code }` when the child exits; if the spawn itself failed (an `error`
 *   event while the child has no pid), it resolves with `startError(err).code`
 *   and `startError` becomes `startError(err).message`. Errors of a running
 *   child are ignored here.
 * - write errors on stdin (EPIPE: the process closed its stdin) are swallowed.
 * - `signalGroup` signals the whole process group (`kill(-pid)`); a gone group
 *   (ESRCH) or a child that never started is a no-op.
 * - `stderr` is the stream given by the caller (null when not piped apart).
 */
export function procFromChild(
  child: ChildProcess,
  opts: { stderr: Readable | null; startError: (err: NodeJS.ErrnoException) => StartFailure },
): Proc {
  let startError: string | undefined;
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once("exit", (code: number | null, signal: NodeJS.Signals | null) => {
      if (signal) resolve({ signal: constants.signals[signal] ?? 9 });
      else resolve({ code: code ?? 0 });
    });
    child.once("error", (err: NodeJS.ErrnoException) => {
      if (child.pid !== undefined) return; // an error on a running child: not a start failure
      const failure = opts.startError(err);
      startError = failure.message;
      resolve({ code: failure.code });
    });
  });
  // Writes to a process that closed its stdin (EPIPE) are expected, not fatal.
  (child.stdin as Writable).on("error", () => {});
  return {
    get pid() {
      return child.pid;
    },
    stdin: child.stdin as Writable,
    stdout: child.stdout,
    stderr: opts.stderr,
    exited,
    get startError() {
      return startError;
    },
    signalGroup(sig) {
      const pid = child.pid;
      if (pid === undefined) return;
      try {
        process.kill(-pid, sig);
      } catch {
        // ESRCH: the group is gone.
      }
    },
  };
}

/**
 * A process the spawner started (src/runtime/spawner.ts, a session leader,
 * so its pid is its process group id) as a `Proc`: `exited` is its exit
 * status (SIGKILL when the spawner died first), `signalGroup` signals the
 * whole group (a gone group is a no-op). `onReport` gets the process's fd-3
 * report (runc's exec wrapper) before `exited` resolves.
 */
export function procFromSpawned(s: Spawned, onReport?: (report: string) => void): Proc {
  return {
    pid: s.pid,
    stdin: s.stdin,
    stdout: s.stdout,
    stderr: s.stderr,
    exited: s.exited.then(({ status, report }) => {
      onReport?.(report);
      return status;
    }),
    startError: undefined,
    signalGroup(sig) {
      try {
        process.kill(-s.pid, sig);
      } catch {
        // ESRCH: the group is gone.
      }
    },
  };
}
