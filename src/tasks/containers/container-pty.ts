import type { PtyOptions } from "../../exec/exec-request.ts";
import { ptyEnv } from "../../exec/pty.ts";

/**
 * The terminal a sidecar's entrypoint runs on (`pty_info` of
 * TaskContainerCreate, `enabled` set): the fields of a PTY exec's request
 * (size already defaulted to 24x80 where the client sent 0, TERM,
 * COLORTERM, TERM_PROGRAM, `no_terminate_on_idle_stdin`) and its `pty_type`.
 *
 * What each one does for a sidecar:
 * - rows/cols: the terminal's window size before the entrypoint starts;
 * - term/colorterm/termProgram: the entrypoint's TERM (default xterm),
 *   COLORTERM and TERM_PROGRAM (only when set), over its env and secrets;
 * - `type` "function" or "shell" (or unspecified): the entrypoint (`args`)
 *   runs on the terminal either way, as for execs; the type names what a
 *   client means to do with the terminal, and no input ever reaches a
 *   sidecar's (no RPC writes its stdin);
 * - noTerminateOnIdleStdin: honoured either way: with no stdin RPC there is
 *   no idle-stdin limit, so a sidecar is never ended for idle stdin.
 */
export interface ContainerPty extends PtyOptions {
  type: "unspecified" | "function" | "shell";
}

/** The env vars a sidecar's terminal adds (none without one); they win over env and secrets. */
export function containerPtyEnv(pty: ContainerPty | undefined): Record<string, string> {
  return pty ? ptyEnv(pty) : {};
}

/**
 * The terminal's part of a create fingerprint: what shapes the container
 * (size and the env it adds), not `type` or `noTerminateOnIdleStdin`, which
 * change nothing. Tagged with "pty" so it never equals another part.
 */
export function ptyFingerprint(pty: ContainerPty): unknown[] {
  return ["pty", pty.rows, pty.cols, containerPtyEnv(pty)];
}
