import type { Command } from "commander";
import { FsError, TaskFilesystem } from "../client/fs.ts";
import { TaskRouterError } from "../errors.ts";
import { ProgressLine } from "../util/progress.ts";
import { clientFrom } from "./common.ts";
import { copyFromTask, packFromTask } from "./cp-from-task.ts";
import { type CpOperand, parseOperand, printable } from "./cp-paths.ts";
import { type CopyContext, copyToTask, extractToTask } from "./cp-to-task.ts";

/** Exit code of a failed copy (docker cp's: 1). */
export const CP_ERROR_EXIT = 1;

interface CpOptions {
  followLink?: boolean;
  quiet?: boolean;
  parallel: string;
}

export function registerCp(program: Command): void {
  program
    .command("cp")
    .description("copy files and directories between a task and the local filesystem")
    .usage("[options] LOCAL|- TASK:PATH\n       taskrouter cp [options] TASK:PATH LOCAL|-")
    .argument("<src>", "LOCAL, TASK:PATH, or - (a tar on stdin)")
    .argument("<dest>", "LOCAL, TASK:PATH, or - (a tar on stdout)")
    .option("-L, --follow-link", "follow a symlink given as SRC (default: copy the link itself)")
    .option("-q, --quiet", "no progress line")
    .option("--parallel <n>", "files copied at a time", "8")
    .addHelpText(
      "after",
      [
        "",
        "As docker cp: a file or directory copied onto an existing directory goes inside it;",
        "SRC/. copies a directory's contents; to a missing DEST it is created (its parent must",
        "exist). TASK:PATH is relative to the task's / unless absolute; name a local path",
        "with a colon as ./a:b. - reads a tar from stdin into an existing directory, or",
        "writes a tar of SRC to stdout. Exit 0 on success, 1 on an error.",
      ].join("\n"),
    )
    .action(async (srcArg: string, destArg: string, o: CpOptions, cmd: Command) => {
      let task: string | undefined;
      try {
        const src = parseOperand(srcArg);
        const dest = parseOperand(destArg);
        task = src.kind === "task" ? src.task : dest.kind === "task" ? dest.task : undefined;
        await cp(cmd, src, dest, o);
        process.exitCode = 0;
      } catch (err) {
        process.stderr.write(`taskrouter: cp: ${printable(describe(err, task))}\n`);
        process.exitCode = CP_ERROR_EXIT;
      }
    });
}

async function cp(cmd: Command, src: CpOperand, dest: CpOperand, o: CpOptions): Promise<void> {
  const parallel = Number(o.parallel);
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > 64) {
    throw new Error(`--parallel takes 1..64, got ${o.parallel}`);
  }
  const remote = src.kind === "task" ? src : dest.kind === "task" ? dest : undefined;
  if (!remote) throw new Error("one of SRC and DEST must be TASK:PATH");
  if (src.kind === "task" && dest.kind === "task") {
    throw new Error("copying between two task paths is not supported: copy through a local path");
  }
  const local = remote === src ? dest : src;
  const label = `copying ${remote === src ? remote.raw : local.kind === "local" ? local.path : "-"}`;
  const progress = new ProgressLine(label, undefined, 1000, quietStream(o.quiet));
  const client = clientFrom(cmd);
  let done = 0;
  const ctx: CopyContext = {
    client,
    fs: new TaskFilesystem(client, remote.task),
    task: remote.task,
    followLink: o.followLink === true,
    progress,
    moved: (n) => {
      done += n;
      progress.update(done);
    },
    parallel,
  };
  try {
    if (remote === src) {
      if (local.kind === "stdio") await packFromTask(ctx, remote.path, process.stdout);
      else if (local.kind === "local") await copyFromTask(ctx, remote.path, local.path);
    } else if (local.kind === "stdio") {
      await extractToTask(ctx, process.stdin, remote.path);
    } else if (local.kind === "local") {
      await copyToTask(ctx, local.path, remote.path);
    }
  } finally {
    progress.end();
    client.close();
  }
}

/** stderr, or a stream that is not a terminal (so ProgressLine draws nothing) for -q. */
function quietStream(quiet: boolean | undefined): NodeJS.WriteStream {
  return quiet ? ({ isTTY: false } as NodeJS.WriteStream) : process.stderr;
}

function describe(err: unknown, task: string | undefined): string {
  if (err instanceof FsError) return `${err.helperMessage}: ${task ?? ""}:${err.path}`;
  if (err instanceof TaskRouterError) return `${err.kind}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}
