import type { RouterClient } from "../client/client.ts";
import { EXEC_INSPECT_USAGE, execInspect } from "./exec-inspect.ts";
import { EXEC_KILL_USAGE, execKill } from "./exec-kill.ts";
import { EXEC_LS_USAGE, execLs } from "./exec-ls.ts";
import { takeGlobalOptions } from "./globals.ts";

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

/**
 * The global options (`--server`, `--token`, `--tls*`) among `exec`'s
 * operands, which commander passes through unparsed, and the operands left:
 * - `exec ls|kill|inspect ...`: anywhere in them (`exec ls TASK --server X`),
 *   up to a `--`;
 * - the run form `exec TASK [GLOBALS] -- CMD...`: only when every word
 *   between TASK and the first `--` is a global option (as `kubectl exec POD
 *   -n NS -- CMD`).
 * Everything after `--`, and the whole command of a run form without `--`
 * (`exec TASK echo --server X`), is the command's and never taken.
 * Undefined when there is nothing to take.
 */
export function execOperandGlobals(
  first: string,
  rest: string[],
): ReturnType<typeof takeGlobalOptions> | undefined {
  if (execVerb(first, rest)) {
    const taken = takeGlobalOptions(rest);
    return taken.options.length > 0 ? taken : undefined;
  }
  const dash = rest.indexOf("--");
  if (dash <= 0) return undefined;
  const taken = takeGlobalOptions(rest.slice(0, dash));
  if (taken.rest.length > 0) return undefined;
  return { options: taken.options, rest: rest.slice(dash) };
}
