import type { Command } from "commander";
import { TasksClient } from "../client/admin.ts";
import { TaskState } from "../gen/taskrouter/v1/tasks_pb.ts";
import { clientFrom, run } from "./common.ts";
import { printTable } from "./table.ts";
import { formatVolumes } from "./volume-option.ts";

export function registerTaskLs(task: Command): void {
  task
    .command("ls")
    .description("list tasks")
    .option("-q, --quiet", "print ids only")
    .action((o: { quiet?: boolean }, cmd: Command) =>
      run(async () => {
        const client = clientFrom(cmd);
        try {
          const tasks = await new TasksClient(client).list();
          if (o.quiet) {
            for (const t of tasks) process.stdout.write(`${t.taskId}\n`);
            return 0;
          }
          const rows = [
            [
              "TASK ID",
              "STATE",
              "RUNTIME",
              "EXECS",
              "CONTAINERS",
              "READY",
              "CREATED",
              "NETWORK",
              "VOLUMES",
            ],
          ];
          for (const t of tasks) {
            rows.push([
              t.taskId,
              t.state === TaskState.RUNNING
                ? "running"
                : t.entrypointExitCode !== undefined || t.entrypointExitSignal !== undefined
                  ? `exited (${t.entrypointExitSignal !== undefined ? `signal ${t.entrypointExitSignal}` : `code ${t.entrypointExitCode}`})`
                  : t.state === TaskState.STOPPED
                    ? `stopped${t.stopReason ? ` (${t.stopReason})` : ""}`
                    : "terminated",
              t.runtime,
              String(t.execCount),
              String(t.containerCount),
              t.readinessProbe === "" ? "-" : t.readyAtMs > 0n ? "ready" : "not ready",
              new Date(Number(t.createdAtMs)).toISOString(),
              // "open", "open (allow: 10.0.0.0/8, +1 more)", "none", "host"; "-": not isolated.
              t.network === ""
                ? "-"
                : t.networkPolicy && t.networkPolicy !== "open"
                  ? `open (${t.networkPolicy})`
                  : t.network,
              formatVolumes(t.volumes),
            ]);
          }
          printTable(rows);
        } finally {
          client.close();
        }
        return 0;
      }),
    );
}
