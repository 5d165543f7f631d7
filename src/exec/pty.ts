import type { PtyOptions } from "./exec-request.ts";

/** TERM of a PTY exec whose request names none (as `docker exec -t` does). */
export const DEFAULT_TERM = "xterm";

/** After SIGHUP for an idle PTY session, this long until SIGKILL. */
export const PTY_IDLE_KILL_GRACE_MS = 2000;

/** The environment a PTY request adds: TERM (always), COLORTERM and TERM_PROGRAM when set. */
export function ptyEnv(pty: PtyOptions): Record<string, string> {
  const env: Record<string, string> = { TERM: pty.term || DEFAULT_TERM };
  if (pty.colorterm) env.COLORTERM = pty.colorterm;
  if (pty.termProgram) env.TERM_PROGRAM = pty.termProgram;
  return env;
}

/**
 * Calls `onIdle` once `idleMs` passed since `lastActivity()` (ms since the
 * epoch, read afresh each time the timer fires, so activity only has to
 * update a number). Returns a function that stops watching.
 */
export function watchIdle(
  lastActivity: () => number,
  idleMs: number,
  onIdle: () => void,
): () => void {
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    const left = lastActivity() + idleMs - Date.now();
    if (left <= 0) return onIdle();
    timer = setTimeout(arm, left);
    timer.unref();
  };
  arm();
  return () => clearTimeout(timer);
}
