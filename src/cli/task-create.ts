import type { Command } from "commander";
import { TasksClient } from "../client/admin.ts";
import { clientFrom, run } from "./common.ts";

export function registerTaskCreate(task: Command): void {
  task
    .command("create")
    .description("create a task and print its id")
    .option("--id <id>", "the task id (default: a generated one)")
    .action((o: { id?: string }, cmd: Command) =>
      run(async () => {
        const client = clientFrom(cmd);
        try {
          const t = await new TasksClient(client).create(o.id ?? "");
          process.stdout.write(`${t.taskId}\n`);
        } finally {
          client.close();
        }
        return 0;
      }),
    );
}
