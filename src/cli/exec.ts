import type { Command } from "commander";
import type { RouterClient, StartOptions } from "../client/client.ts";
import { clientFrom, run } from "./common.ts";
import { copyOutput, execTty, exitCodeOf } from "./exec-tty.ts";
import { EXEC_VERB_USAGES, execVerb } from "./exec-verbs.ts";
import { isGlobalOption } from "./globals.ts";
import { collectEnv, envPairs, parsePositiveInt } from "./parse.ts";

interface ExecOptions {
  interactive?: boolean;
  tty?: boolean;
  workdir?: string;
  env: string[];
  timeout?: number;
  secret: string[];
}

export function registerExec(program: Command): void {
  program
    .command("exec")
    .description("run a command in a task, streaming its output; exits with its exit code")
    .usage(`[options] TASK -- CMD [ARG...]\n       ${EXEC_VERB_USAGES.join("\n       ")}`)
    .option("-i, --interactive", "forward local stdin to the command (EOF included)")
    .option("-t, --tty", "run on a pseudo-terminal; with -i, a raw local terminal (needs a TTY)")
    .option("-w, --workdir <dir>", "working directory inside the task")
    .option("-e, --env <NAME=VALUE>", "set an environment variable (repeatable)", collectEnv, [])
    .option(
      "--secret <name>",
      "set the pairs of a secret as env vars (repeatable; -e wins)",
      (v: string, prev: string[]) => [...prev, v],
      [],
    )
    .option(
      "--timeout <seconds>",
      "kill the command (and its process group) after this long",
      parsePositiveInt,
    )
    .argument("<task>", "task id")
    .argument("[cmd...]", "command and arguments")
    .addHelpText(
      "after",
      "\n`exec ls|kill|inspect ...` are verbs unless followed by `--`:\na task named ls runs a command with `exec ls -- CMD`.",
    )
    .passThroughOptions()
    .action((task: string, args: string[], o: ExecOptions, cmd: Command) =>
      run(async () => {
        const verb = execVerb(task, args);
        if (verb) {
          const given = cmd.options.filter(
            (opt) =>
              cmd.getOptionValueSource(opt.attributeName()) === "cli" &&
              !isGlobalOption(opt.attributeName()),
          );
          if (given.length > 0) {
            throw new Error(`exec ${task} takes no run options (${given[0]?.flags ?? ""})`);
          }
          const client = clientFrom(cmd);
          try {
            return await verb(client);
          } finally {
            client.close();
          }
        }
        // Options pass through after TASK, so a leading "--" is still in the operands.
        const argv = args[0] === "--" ? args.slice(1) : args;
        if (argv.length === 0) throw new Error("exec needs a command: exec TASK -- CMD [ARG...]");
        const client = clientFrom(cmd);
        try {
          if (o.tty) return await execTtyCommand(client, task, argv, o);
          return await execCommand(client, task, argv, o);
        } finally {
          client.close();
        }
      }),
    );
}

/**
 * What both exec paths start: `argv`, and the start options `-e` (the
 * request's `env`, which wins over secrets), `-w`, `--timeout` and
 * `--secret` ask for (only those given).
 */
function startRequest(
  argv: string[],
  o: ExecOptions,
): { argv: string[]; start: Omit<StartOptions, "pty" | "stdout" | "stderr"> } {
  return {
    argv,
    start: {
      ...(o.env.length > 0 ? { env: envPairs(o.env) } : {}),
      ...(o.workdir !== undefined ? { workdir: o.workdir } : {}),
      ...(o.timeout !== undefined ? { timeoutSecs: o.timeout } : {}),
      ...(o.secret.length > 0 ? { secretIds: o.secret } : {}),
    },
  };
}

function execTtyCommand(
  client: RouterClient,
  task: string,
  argv: string[],
  o: ExecOptions,
): Promise<number> {
  const req = startRequest(argv, o);
  return execTty(client, task, req.argv, { interactive: o.interactive === true, start: req.start });
}

async function execCommand(
  client: RouterClient,
  task: string,
  argv: string[],
  o: ExecOptions,
): Promise<number> {
  const req = startRequest(argv, o);
  const execId = await client.start(task, req.argv, {
    stdout: "pipe",
    stderr: "pipe",
    ...req.start,
  });
  const stdin = o.interactive
    ? forwardStdin(client, task, execId)
    : client.writeStdin(task, execId, 0, new Uint8Array(), true);
  const [status] = await Promise.all([
    client.wait(task, execId),
    copyOutput(client, task, execId, "stdout", process.stdout),
    copyOutput(client, task, execId, "stderr", process.stderr),
  ]);
  process.stdin.destroy();
  await stdin.catch(() => {});
  return exitCodeOf(status);
}

async function forwardStdin(client: RouterClient, task: string, execId: string): Promise<void> {
  let offset = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    await client.writeStdin(task, execId, offset, chunk);
    offset += chunk.length;
  }
  await client.writeStdin(task, execId, offset, new Uint8Array(), true);
}
