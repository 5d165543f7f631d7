import { InvalidArgumentError, PermissionDeniedError } from "../errors.ts";
import type { EnvSource } from "../exec/exec-request.ts";
import { quote } from "../limits.ts";
import { checkSecretName } from "../secrets/validate.ts";

/**
 * Secret grants. A task's execs may use the secrets granted to the task
 * (`task create --allow-secret`, kept in its record) and those its caller
 * may use: every secret for an admin, the names of its token's `secrets`
 * claim otherwise. The caller is established at the edge from the verified
 * token (the domain never sees tokens).
 */
export interface Caller {
  readonly admin: boolean;
  /** Secret names granted to this caller by its token. */
  readonly secrets: readonly string[];
}

/** A caller that may use every secret: admin tokens, `--auth none`, in-process callers. */
export const ADMIN_CALLER: Caller = Object.freeze({ admin: true, secrets: [] });

/** A caller with no grants of its own (only the task's). */
export const NO_GRANTS: Caller = Object.freeze({ admin: false, secrets: [] });

/** At most this many secrets may be granted to one task. */
export const MAX_TASK_SECRETS = 256;

/** The secret grants of a new task: valid names, each once; InvalidArgument otherwise. */
export function checkGrants(names: readonly string[]): string[] {
  if (names.length > MAX_TASK_SECRETS) {
    throw new InvalidArgumentError(`a task may be granted at most ${MAX_TASK_SECRETS} secrets`);
  }
  for (const name of names) checkSecretName(name);
  return [...new Set(names)];
}

/** The grants of a stored task record's field (records of older routers have none). */
export function storedGrants(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((n): n is string => typeof n === "string") : [];
}

/**
 * PermissionDenied, naming the first secret of `sources` that `caller` may
 * not use in task `taskId` (whose own grants are `granted`). Empty ids are
 * left to the secret store (InvalidArgument).
 */
export function assertSecretsGranted(
  taskId: string,
  granted: readonly string[],
  caller: Caller,
  sources: readonly EnvSource[],
): void {
  if (caller.admin) return;
  for (const src of sources) {
    if ("env" in src || src.secretId === "") continue;
    const id = src.secretId;
    if (!granted.includes(id) && !caller.secrets.includes(id)) {
      throw new PermissionDeniedError(
        `secret ${quote(id)} is not granted to task ${taskId} (task create --allow-secret) nor to the token`,
      );
    }
  }
}
