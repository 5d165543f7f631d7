import { InvalidArgumentError, PermissionDeniedError } from "../errors.ts";
import type { EnvSource } from "../exec/exec-request.ts";
import { quote } from "../limits.ts";
import type { VolumeBind } from "../runtime/task-filesystem.ts";
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

/** A volume a sidecar asks to mount (its name and whether read-only). */
export interface VolumeWish {
  readonly name: string;
  readonly readOnly: boolean;
}

/**
 * PermissionDenied, naming the first volume of `wanted` that `caller` may not
 * mount in a sidecar of task `taskId`. An admin may mount any volume; a task
 * token only the volumes its task was created with (`own`, the task's
 * `--volume`s), read-only where the task has it read-only only. Checked
 * before any volume is looked up, so names cannot be probed.
 */
export function assertVolumesGranted(
  taskId: string,
  own: readonly VolumeBind[] | undefined,
  caller: Caller,
  wanted: readonly VolumeWish[],
): void {
  if (caller.admin) return;
  for (const w of wanted) {
    const binds = (own ?? []).filter((b) => b.name === w.name);
    if (binds.length === 0) {
      throw new PermissionDeniedError(
        `volume ${quote(w.name)} is not one of task ${taskId}'s volumes (task create --volume); only an admin token may mount another`,
      );
    }
    if (!w.readOnly && binds.every((b) => b.readOnly)) {
      throw new PermissionDeniedError(
        `volume ${quote(w.name)} is granted to task ${taskId} read-only: mount it with read_only`,
      );
    }
  }
}
