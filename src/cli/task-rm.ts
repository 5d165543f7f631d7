import type { Command } from "commander";
import { TasksClient } from "../client/admin.ts";
import { clientFrom, run } from "./common.ts";

export function registerTaskRm(task: Command): void {
  task
    .command("rm")
    .description("terminate tasks: kill all their commands and remove them")
    .argument("<id...>", "task ids")
    .action((ids: string[], _o: unknown, cmd: Command) =>
      run(async () => {
        const client = clientFrom(cmd);
        try {
          const tasks = new TasksClient(client);
          for (const id of ids) {
            await tasks.terminate(id);
            process.stdout.write(`${id}\n`);
          }
        } finally {
          client.close();
        }
        return 0;
      }),
    );
}
