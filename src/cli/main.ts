import { Command } from "commander";
import { registerExec } from "./exec.ts";
import { registerServe } from "./serve.ts";
import { registerTaskCreate } from "./task-create.ts";
import { registerTaskLs } from "./task-ls.ts";
import { registerTaskRm } from "./task-rm.ts";

const program = new Command("taskrouter")
  .description("task command router: run commands inside tasks over gRPC")
  .option("--server <host:port>", "router address (default: $TASKROUTER_SERVER or 127.0.0.1:7878)")
  .enablePositionalOptions();

registerServe(program);
registerExec(program);
const task = program.command("task").description("manage tasks");
registerTaskCreate(task);
registerTaskLs(task);
registerTaskRm(task);

await program.parseAsync(process.argv);
