import type { Command } from "commander";
import { RouterClient } from "../client/client.ts";
import { TaskRouterError } from "../errors.ts";

export const DEFAULT_SERVER = "127.0.0.1:7878";

/** The global options every client verb shares. */
export interface GlobalOptions {
  server?: string;
}

/** A client for the server named by --server, TASKROUTER_SERVER, or the default. */
export function clientFrom(cmd: Command): RouterClient {
  const opts = cmd.optsWithGlobals<GlobalOptions>();
  const server = opts.server || process.env.TASKROUTER_SERVER || DEFAULT_SERVER;
  return new RouterClient(server);
}

/** Exit code of the CLI for its own failures (not the remote command's), as `docker` does. */
export const CLI_ERROR_EXIT = 125;

/** Runs a verb, printing a failure as one line on stderr and exiting non-zero. */
export async function run(fn: () => Promise<number | undefined>): Promise<void> {
  try {
    const code = await fn();
    process.exitCode = code ?? 0;
  } catch (err) {
    const msg =
      err instanceof TaskRouterError ? `${err.kind}: ${err.message}` : (err as Error).message;
    process.stderr.write(`taskrouter: ${msg}\n`);
    process.exitCode = CLI_ERROR_EXIT;
  }
}
