import { InvalidArgumentError } from "../../errors.ts";
import type { PtyOptions } from "../../exec/exec-request.ts";
import { ptyEnv } from "../../exec/pty.ts";
import { quote } from "../../limits.ts";

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

/** Checks a sidecar's terminal request: sizes 1-65535, env values without NUL (InvalidArgument). */
export function checkContainerPty(pty: ContainerPty): void {
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
