import { constants } from "node:os";
import { InvalidArgumentError } from "../errors.ts";
import { quote } from "../limits.ts";

/** Highest signal number on Linux (SIGRTMAX). */
const MAX_SIGNAL = 64;

const S = constants.signals;
/** Signals whose default action does not end a process. */
const NON_TERMINATING = new Set<number>([
  S.SIGCHLD,
  S.SIGCONT,
  S.SIGSTOP,
  S.SIGTSTP,
  S.SIGTTIN,
  S.SIGTTOU,
  S.SIGURG,
  S.SIGWINCH,
]);

/**
 * A signal given as a number (1..64) or a name ("TERM", "SIGTERM", "term",
 * or digits) → its number. InvalidArgument for anything else.
 */
export function parseSignal(v: number | string): number {
  if (typeof v === "number" || /^\d+$/.test(v.trim())) {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > MAX_SIGNAL) {
      throw new InvalidArgumentError(
        `signal ${quote(String(v))} is not a signal number (1-${MAX_SIGNAL})`,
      );
    }
    return n;
  }
  const name = v.trim().toUpperCase();
  const full = name.startsWith("SIG") ? name : `SIG${name}`;
  const n = (S as Record<string, number | undefined>)[full];
  if (n === undefined) throw new InvalidArgumentError(`unknown signal ${quote(String(v))}`);
  return n;
}

/** True when the signal's default action ends the process (so sending it is a "kill"). */
export function endsProcessByDefault(signal: number): boolean {
  return !NON_TERMINATING.has(signal);
}
