import type { RouterClient } from "../client/client.ts";
import { ExecsClient } from "../client/execs.ts";
import { ExecState } from "../gen/taskrouter/v1/execs_pb.ts";
import { causeText, exitText } from "./exec-info.ts";
import { printTable } from "./table.ts";

export const EXEC_LS_USAGE = "exec ls TASK";

/** `exec ls TASK`: a table of the task's execs, oldest first. */
export async function execLs(client: RouterClient, args: string[]): Promise<number> {
  const [task, ...extra] = args;
  if (task === undefined || extra.length > 0) throw new Error(`usage: ${EXEC_LS_USAGE}`);
  const execs = await new ExecsClient(client).list(task);
  const rows = [
    ["EXEC ID", "PID", "STATE", "EXIT", "CAUSE", "PTY", "CONTAINER", "STARTED", "COMMAND"],
  ];
  for (const e of execs) {
    rows.push([
      e.execId,
      e.pid ? String(e.pid) : "-",
      e.state === ExecState.RUNNING ? "running" : "exited",
      exitText(e),
      causeText(e),
      e.pty ? `${e.ptyRows}x${e.ptyCols}` : "-",
      e.containerId || "main",
      new Date(Number(e.startedAtMs)).toISOString(),
      e.commandArgs.map((a) => (/^[\w./:=@%+,-]+$/.test(a) ? a : JSON.stringify(a))).join(" "),
    ]);
  }
  printTable(rows);
  return 0;
}
