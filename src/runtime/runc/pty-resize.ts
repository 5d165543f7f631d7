import { spawn as spawnChild } from "node:child_process";
import { ptsOf } from "../../linux/proc.ts";
import type { Proc } from "../runtime.ts";

/**
 * `Proc.resize` of a PTY exec: resizes the router's terminal, and, when the
 * runtime does not relay that to the task's terminal itself
 * (`OciFlavor.relaysResize`), sets the size of the task's terminal too: the
 * wrapper's controlling terminal reached through its root, with `stty -F`;
 * one at a time, the latest size last.
 */
export function resizer(outer: Proc, relays: boolean, wrapperPid: () => number | undefined) {
  let running = false;
  let want: [number, number] | undefined;
  const next = () => {
    const pid = wrapperPid();
    const size = want;
    want = undefined;
    const pts = pid === undefined || size === undefined ? undefined : ptsOf(pid);
    if (pts === undefined || size === undefined) {
      running = false;
      return;
    }
    running = true;
    const child = spawnChild(
      "stty",
      ["-F", pts, "rows", String(size[0]), "cols", String(size[1])],
      {
        stdio: "ignore",
      },
    );
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      next();
    };
    child.once("error", end);
    child.once("exit", end);
  };
  return (rows: number, cols: number) => {
    outer.resize?.(rows, cols);
    if (relays) return;
    want = [rows, cols];
    if (!running) next();
  };
}
