import { readFileSync } from "node:fs";
import { type ChannelCredentials, credentials } from "@grpc/grpc-js";
import type { Command } from "commander";
import { RouterClient } from "../client/client.ts";
import { TaskRouterError } from "../errors.ts";

export const DEFAULT_SERVER = "127.0.0.1:7878";

/** The global options every client verb shares. */
export interface GlobalOptions {
  server?: string;
  token?: string;
  tls?: boolean;
  tlsCa?: string;
  tlsInsecure?: boolean;
}

/**
 * A client for the server named by --server, TASKROUTER_SERVER, or the
 * default, sending the token of --token or TASKROUTER_TOKEN, over TLS with
 * --tls / --tls-ca / --tls-insecure.
 */
export function clientFrom(cmd: Command): RouterClient {
  const opts = cmd.optsWithGlobals<GlobalOptions>();
  const server = opts.server || process.env.TASKROUTER_SERVER || DEFAULT_SERVER;
  const token = opts.token || process.env.TASKROUTER_TOKEN || undefined;
  const creds = tlsCredentials(opts);
  return new RouterClient(server, {
    ...(token ? { token } : {}),
    ...(creds ? { credentials: creds } : {}),
  });
}

function tlsCredentials(o: GlobalOptions): ChannelCredentials | undefined {
  if (!o.tls && !o.tlsCa && !o.tlsInsecure) return undefined;
  let ca: Buffer | null = null;
  if (o.tlsCa) {
    try {
      ca = readFileSync(o.tlsCa);
    } catch (err) {
      throw new Error(
        `--tls-ca ${o.tlsCa}: ${(err as NodeJS.ErrnoException).code ?? "unreadable"}`,
      );
    }
  }
  return credentials.createSsl(ca, null, null, o.tlsInsecure ? { rejectUnauthorized: false } : {});
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
