import type { Command } from "commander";
import { type DaemonConfig, DEFAULT_CONFIG, startDaemon } from "../daemon.ts";
import { TaskRouterError } from "../errors.ts";
import { createLogger } from "../log.ts";
import { DEFAULT_SERVER } from "./common.ts";
import { parseDuration, parsePositiveInt, parseSize } from "./parse.ts";

interface ServeOptions {
  listen: string;
  dataDir: string;
  retention: number;
  outputCap: number;
  memoryLimit: number;
  drainGrace: number;
  maxExecsPerTask: number;
  logLevel: string;
  demo?: boolean;
}

export function registerServe(program: Command): void {
  const d = DEFAULT_CONFIG;
  program
    .command("serve")
    .description("run the router (TaskCommandRouter gRPC server)")
    .option("--listen <host:port>", "address to serve on", d.listen)
    .option("--data-dir <dir>", "where tasks, output spill files and state live", d.dataDir)
    .option(
      "--retention <duration>",
      "keep finished execs and their output this long",
      parseDuration,
      d.retentionMs,
    )
    .option(
      "--output-cap <size>",
      "output kept per exec before the command is paused",
      parseSize,
      d.outputCap,
    )
    .option(
      "--memory-limit <size>",
      "output per stream kept in memory before spilling to disk",
      parseSize,
      d.memoryLimit,
    )
    .option(
      "--drain-grace <duration>",
      "grace for descendants holding output pipes after exit",
      parseDuration,
      d.drainGraceMs,
    )
    .option(
      "--max-execs-per-task <n>",
      "execs a task may hold at once",
      parsePositiveInt,
      d.maxExecsPerTask,
    )
    .option("--log-level <level>", "pino log level (trace..fatal, silent)", "info")
    .option("--demo", "create a task named 'demo' and print a command to try")
    .action(async (o: ServeOptions) => {
      const log = createLogger(o.logLevel);
      const config: DaemonConfig = {
        listen: o.listen,
        dataDir: o.dataDir,
        runtime: "host",
        retentionMs: o.retention,
        outputCap: o.outputCap,
        memoryLimit: o.memoryLimit,
        drainGraceMs: o.drainGrace,
        maxExecsPerTask: o.maxExecsPerTask,
      };
      const daemon = await startDaemon(config, log);
      process.stdout.write(
        `taskrouter: listening on ${daemon.address} (runtime ${daemon.runtime.name})\n`,
      );
      if (daemon.runtime.warning)
        process.stderr.write(`taskrouter: WARNING: ${daemon.runtime.warning}\n`);
      if (o.demo) {
        try {
          daemon.tasks.get("demo");
        } catch (err) {
          if (!(err instanceof TaskRouterError)) throw err;
          await daemon.tasks.create("demo");
        }
        const server = daemon.address === DEFAULT_SERVER ? "" : ` --server ${daemon.address}`;
        process.stdout.write(
          `taskrouter: demo task ready; try:\n  npx taskrouter${server} exec demo -- uname -a\n`,
        );
      }
      let closing = false;
      const stop = (sig: string) => {
        if (closing) return;
        closing = true;
        log.info({ signal: sig }, "shutting down");
        daemon.close().then(
          () => process.exit(0),
          (err: unknown) => {
            log.error({ err }, "shutdown failed");
            process.exit(1);
          },
        );
      };
      process.once("SIGINT", () => stop("SIGINT"));
      process.once("SIGTERM", () => stop("SIGTERM"));
    });
}
