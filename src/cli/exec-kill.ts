import { parseArgs } from "node:util";
import type { RouterClient } from "../client/client.ts";
import { ExecsClient } from "../client/execs.ts";

export const EXEC_KILL_USAGE = "exec kill [--signal S] TASK EXEC_ID";

/**
 * `exec kill [-s|--signal S] TASK EXEC_ID`: sends S (a name such as TERM or
 * SIGTERM, or a number; default KILL) to the exec's whole process group.
 */
export async function execKill(client: RouterClient, args: string[]): Promise<number> {
  let parsed: { values: { signal?: string | undefined }; positionals: string[] };
  try {
    parsed = parseArgs({
      args,
      options: { signal: { type: "string", short: "s" } },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new Error(`${(err as Error).message}; usage: ${EXEC_KILL_USAGE}`);
  }
  const [task, execId, ...extra] = parsed.positionals;
  if (task === undefined || execId === undefined || extra.length > 0) {
    throw new Error(`usage: ${EXEC_KILL_USAGE}`);
  }
  const sig = parsed.values.signal ?? "KILL";
  await new ExecsClient(client).signal(task, execId, /^\d+$/.test(sig) ? Number(sig) : sig);
  process.stdout.write(`${execId}\n`);
  return 0;
}
