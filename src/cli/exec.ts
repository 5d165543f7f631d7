import { once } from "node:events";
import type { Writable } from "node:stream";
import type { Command } from "commander";
import type { RouterClient, StreamName } from "../client/client.ts";
import { clientFrom, run } from "./common.ts";
import { collectEnv, parsePositiveInt } from "./parse.ts";

interface ExecOptions {
  interactive?: boolean;
  workdir?: string;
  env: string[];
  timeout?: number;
}

export function registerExec(program: Command): void {
  program
    .command("exec")
    .description("run a command in a task, streaming its output; exits with its exit code")
    .usage("[options] TASK -- CMD [ARG...]")
    .option("-i, --interactive", "forward local stdin to the command (EOF included)")
    .option("-w, --workdir <dir>", "working directory inside the task")
    .option("-e, --env <NAME=VALUE>", "set an environment variable (repeatable)", collectEnv, [])
    .option(
      "--timeout <seconds>",
      "kill the command (and its process group) after this long",
      parsePositiveInt,
    )
    .argument("<task>", "task id")
    .argument("<cmd...>", "command and arguments")
    .passThroughOptions()
    .action((task: string, args: string[], o: ExecOptions, cmd: Command) =>
      run(async () => {
        // Options pass through after TASK, so a leading "--" is still in the operands.
        const argv = args[0] === "--" ? args.slice(1) : args;
        if (argv.length === 0) throw new Error("exec needs a command: exec TASK -- CMD [ARG...]");
        const client = clientFrom(cmd);
        try {
          return await execCommand(client, task, argv, o);
        } finally {
          client.close();
        }
      }),
    );
}

async function execCommand(
  client: RouterClient,
  task: string,
  argv: string[],
  o: ExecOptions,
): Promise<number> {
  // The protocol has no env field: variables are set through env(1), in the task.
  const full = o.env.length > 0 ? ["env", ...o.env, ...argv] : argv;
  const execId = await client.start(task, full, {
    stdout: "pipe",
    stderr: "pipe",
    ...(o.workdir !== undefined ? { workdir: o.workdir } : {}),
    ...(o.timeout !== undefined ? { timeoutSecs: o.timeout } : {}),
  });
  const copy = async (stream: StreamName, out: Writable) => {
    for await (const chunk of client.read(task, execId, stream)) {
      if (!out.write(chunk)) await once(out, "drain");
    }
  };
  const stdin = o.interactive
    ? forwardStdin(client, task, execId)
    : client.writeStdin(task, execId, 0, new Uint8Array(), true);
  const [status] = await Promise.all([
    client.wait(task, execId),
    copy("stdout", process.stdout),
    copy("stderr", process.stderr),
  ]);
  process.stdin.destroy();
  await stdin.catch(() => {});
  return status.signal !== undefined ? 128 + status.signal : status.code;
}

async function forwardStdin(client: RouterClient, task: string, execId: string): Promise<void> {
  let offset = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    await client.writeStdin(task, execId, offset, chunk);
    offset += chunk.length;
  }
  await client.writeStdin(task, execId, offset, new Uint8Array(), true);
}
