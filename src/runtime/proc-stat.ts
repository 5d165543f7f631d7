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
