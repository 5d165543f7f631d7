import { readFileSync } from "node:fs";

/**
 * The fields of /proc/<pid>/stat after the command name: index 0 is the
 * state (field 3 of proc(5)), index 4 tty_nr, index 19 the start time.
 * Undefined when the process is gone.
 */
export function procStatFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/**
 * Field 22 of /proc/<pid>/stat (start time), or undefined when the process
 * is gone or a zombie: with the pid, it names one process across pid reuse.
 */
export function procStart(pid: number): string | undefined {
  const f = procStatFields(pid);
  return f === undefined || f[0] === "Z" ? undefined : f[19];
}

/**
 * The host path of the pts that is process `pid`'s controlling terminal,
 * reached through its root (field tty_nr of its stat, a Unix98 pts), or
 * undefined when it has none.
 */
export function ptsOf(pid: number): string | undefined {
  const ttyNr = Number(procStatFields(pid)?.[4] ?? 0);
  const major = (ttyNr >> 8) & 0xfff;
  const minor = (ttyNr & 0xff) | ((ttyNr >> 12) & 0xfff00);
  if (major < 136 || major > 143) return undefined;
  return `/proc/${pid}/root/dev/pts/${(major - 136) * 256 + minor}`;
}
