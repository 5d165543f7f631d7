import { SignJWT } from "jose";
import { InvalidArgumentError, PermissionDeniedError } from "../errors.ts";
import { quote } from "../limits.ts";
import { SIGNING_ALG, type SigningKey } from "./keys.ts";

/** The claim that names the one task a token reaches. */
export const TASK_CLAIM = "task_id";
/** The scope (in the space-separated `scope` claim) of admin tokens. */
export const ADMIN_SCOPE = "taskrouter:admin";
/** The `iss` of tokens this router mints (informational; not checked). */
export const ISSUER = "taskrouter";
/**
 * The claim of a task token that grants secrets beyond the task's own
 * (`task create --allow-secret`): a list of secret names, e.g. set by an
 * external issuer (`--jwks`). Admin tokens may use every secret.
 */
export const SECRETS_CLAIM = "secrets";

/**
 * Clock skew allowed between a token's issuer and this router, seconds: for
 * `exp`/`nbf` (the verifier's default) and for a task token's `iat` against
 * its task's creation (authorize).
 */
export const CLOCK_SKEW_SEC = 30;

/**
 * Who a verified token speaks for (`secrets`: the names its SECRETS_CLAIM
 * grants; `issuedAt`: its `iat` in seconds, undefined when it has none).
 */
export type Principal =
  | { kind: "admin" }
  | { kind: "task"; taskId: string; secrets: readonly string[]; issuedAt: number | undefined };

/**
 * What a call needs: one task (TaskCommandRouter calls; `createdAtMs`: when
 * the task of that id now on the router was created, when there is one) or
 * the admin scope.
 */
export type Need = { task: string; createdAtMs?: number | undefined } | "admin";

/** Whom to mint a token for. */
export type Subject = { task: string } | { admin: true };

/**
 * Mints a token signed with the router's key: `task_id` (task tokens) or
 * `scope: "taskrouter:admin"` (admin tokens), `iat`, `exp` (now + `ttlMs`),
 * `iss: "taskrouter"`, and `aud` when `audience` is given. InvalidArgument
 * for an empty task id or a TTL that is not positive.
 */
export async function issueToken(
  key: SigningKey,
  subject: Subject,
  ttlMs: number,
  opts: { audience?: string | undefined } = {},
): Promise<string> {
  if (!(ttlMs > 0)) throw new InvalidArgumentError("the token's TTL must be positive");
  const claims: Record<string, string> =
    "task" in subject ? { [TASK_CLAIM]: subject.task } : { scope: ADMIN_SCOPE };
  if ("task" in subject && subject.task === "") {
    throw new InvalidArgumentError("the task id must not be empty");
  }
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: SIGNING_ALG, kid: key.kid, typ: "JWT" })
    .setIssuer(ISSUER)
    .setIssuedAt(now)
    .setExpirationTime(now + Math.max(1, Math.round(ttlMs / 1000)));
  if (opts.audience) jwt.setAudience(opts.audience);
  return jwt.sign(key.privateKey);
}

/**
 * Reads who a verified payload speaks for: admin when its `scope` holds
 * `taskrouter:admin`, else the task of its `task_id` (with the secrets of its
 * `secrets` claim). PermissionDenied for a valid token that grants neither,
 * or whose `secrets` claim is not a list of strings (refreshing it would not
 * help, so it is not UNAUTHENTICATED).
 */
export function principalOf(payload: Record<string, unknown>): Principal {
  const scope = payload.scope;
  if (typeof scope === "string" && scope.split(" ").includes(ADMIN_SCOPE)) return { kind: "admin" };
  const task = payload[TASK_CLAIM];
  if (typeof task === "string" && task !== "") {
    const iat = payload.iat;
    return {
      kind: "task",
      taskId: task,
      secrets: secretsClaim(payload[SECRETS_CLAIM]),
      issuedAt: typeof iat === "number" && Number.isFinite(iat) ? iat : undefined,
    };
  }
  throw new PermissionDeniedError(
    `token grants no access: it has neither a "${TASK_CLAIM}" claim nor the "${ADMIN_SCOPE}" scope`,
  );
}

/** The secret names of a `secrets` claim (absent: none). */
function secretsClaim(v: unknown): readonly string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((s) => typeof s === "string")) {
    throw new PermissionDeniedError(
      `the token's "${SECRETS_CLAIM}" claim must be a list of secret names`,
    );
  }
  return Object.freeze([...v]);
}

/**
 * Throws PermissionDenied unless `who` may make a call that needs `need`:
 * admin tokens reach the admin services and every task; a task token reaches
 * only its own task, and not a task of that id created after the token was
 * issued (its `iat` more than CLOCK_SKEW_SEC before the task's creation
 * second): a token of a terminated task does not reach a new task given the
 * same id.
 */
export function authorize(who: Principal, need: Need): void {
  if (who.kind === "admin") return;
  if (need === "admin") {
    throw new PermissionDeniedError("this call needs an admin token; a task token was given");
  }
  if (need.task !== who.taskId) {
    throw new PermissionDeniedError(
      `the token is for task ${quote(who.taskId)}, not ${quote(need.task)}`,
    );
  }
  const born = need.createdAtMs;
  if (
    born !== undefined &&
    who.issuedAt !== undefined &&
    who.issuedAt + CLOCK_SKEW_SEC < Math.floor(born / 1000)
  ) {
    throw new PermissionDeniedError(
      `the token was issued before task ${quote(need.task)} was created: it was for an earlier task of that id`,
    );
  }
}
