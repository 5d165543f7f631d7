import type { RouterClient } from "../client/client.ts";
import { ExecsClient } from "../client/execs.ts";
import { execInfoJson } from "./exec-info.ts";

export const EXEC_INSPECT_USAGE = "exec inspect TASK EXEC_ID";

/** `exec inspect TASK EXEC_ID`: the exec's description as JSON. */
export async function execInspect(client: RouterClient, args: string[]): Promise<number> {
  const [task, execId, ...extra] = args;
  if (task === undefined || execId === undefined || extra.length > 0) {
    throw new Error(`usage: ${EXEC_INSPECT_USAGE}`);
  }
  const info = await new ExecsClient(client).inspect(task, execId);
  process.stdout.write(`${JSON.stringify(execInfoJson(info), null, 2)}\n`);
  return 0;
}
