import type { RouterClient } from "../client/client.ts";
import { EXEC_INSPECT_USAGE, execInspect } from "./exec-inspect.ts";
import { EXEC_KILL_USAGE, execKill } from "./exec-kill.ts";
import { EXEC_LS_USAGE, execLs } from "./exec-ls.ts";

const VERBS: Record<string, (client: RouterClient, args: string[]) => Promise<number>> = {
  ls: execLs,
  kill: execKill,
  inspect: execInspect,
};

export const EXEC_VERB_USAGES = [EXEC_LS_USAGE, EXEC_KILL_USAGE, EXEC_INSPECT_USAGE];

/**
 * The `exec` verb named by the first operand, or undefined for the run form.
 * Rule: `exec ls|kill|inspect ...` is the verb unless the word is followed by
 * `--`, so a task named like a verb runs commands with `exec ls -- CMD`.
 */
export function execVerb(
  first: string,
  rest: string[],
): ((client: RouterClient) => Promise<number>) | undefined {
  if (rest[0] === "--" || !Object.hasOwn(VERBS, first)) return undefined;
  const verb = VERBS[first];
  return verb ? (client) => verb(client, rest) : undefined;
}
