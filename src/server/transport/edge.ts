import { kMaxLength } from "node:buffer";
import {
  Metadata,
  ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type ServiceDefinition,
  status,
} from "@grpc/grpc-js";
import type { Logger } from "pino";
import { authorize, type Principal } from "../../auth/tokens.ts";
import type { TokenVerifier } from "../../auth/verifier.ts";
import { TaskRouterError, UnauthenticatedError } from "../../errors.ts";
import { ADMIN_CALLER, type Caller, NO_GRANTS } from "../../tasks/grants.ts";
import { BadRequest } from "./bad-request.ts";
import { guardInflation } from "./inflate.ts";
import { toGrpcError } from "./status.ts";

/**
 * Who may call a service:
 * - "task": a token for the request's `task_id` (or an admin token);
 * - "admin": an admin token;
 * - "open": anyone, no token needed.
 */
export type AccessPolicy = "task" | "admin" | "open";

/** Services by full name. Any service not listed needs an admin token (fail closed). */
export const SERVICE_POLICY: Readonly<Record<string, AccessPolicy>> = {
  "modal.task_command_router.TaskCommandRouter": "task",
  "taskrouter.v1.Execs": "task",
  "taskrouter.v1.Tasks": "admin",
  "taskrouter.v1.Secrets": "admin",
  "taskrouter.v1.Images": "admin",
  "taskrouter.v1.Volumes": "admin",
  "taskrouter.v1.MemorySnapshots": "admin",
  "grpc.health.v1.Health": "open",
  // Lists only the published protos; every listed service still checks its own calls.
  "grpc.reflection.v1.ServerReflection": "open",
  "grpc.reflection.v1alpha.ServerReflection": "open",
};

/** The policy of the service of a method path (`/<service>/<method>`). */
export function policyOfPath(path: string): AccessPolicy {
  return SERVICE_POLICY[path.split("/")[1] ?? ""] ?? "admin";
}

/** The full name of a grpc-js service definition (from its methods' paths). */
export function serviceName(def: ServiceDefinition): string {
  const first = Object.values(def)[0];
  return first ? (first.path.split("/")[1] ?? "") : "";
}

const BEARER = /^Bearer +([^ ]+) *$/i;

/**
 * Who a call's one `authorization: Bearer <JWT>` header speaks for.
 * Unauthenticated: no, several or a non-Bearer header, or a bad token;
 * PermissionDenied: a valid token that reaches nothing. Messages never
 * contain the token.
 */
export async function verifyCaller(
  verifier: TokenVerifier,
  metadata: Metadata,
): Promise<Principal> {
  const values = metadata.get("authorization");
  if (values.length === 0) {
    throw new UnauthenticatedError("missing authorization: send 'authorization: Bearer <token>'");
  }
  if (values.length > 1) {
    throw new UnauthenticatedError("several authorization headers: send exactly one");
  }
  const m = typeof values[0] === "string" ? BEARER.exec(values[0]) : null;
  if (!m?.[1]) {
    throw new UnauthenticatedError("malformed authorization: expected 'Bearer <token>'");
  }
  return verifier.verify(m[1]);
}

const ADMIN: Principal = { kind: "admin" };

/** Who each admitted call speaks for, by its metadata (what handlers get as `call.metadata`). */
const admitted = new WeakMap<Metadata, Principal>();

/** Who an admitted call speaks for; undefined for calls of open services. */
export function principalOfCall(metadata: Metadata): Principal | undefined {
  return admitted.get(metadata);
}

/** The domain's view of a call's caller (see Caller); no grants for unauthenticated calls. */
export function callerOf(metadata: Metadata): Caller {
  const who = admitted.get(metadata);
  if (!who) return NO_GRANTS;
  return who.kind === "admin" ? ADMIN_CALLER : { admin: false, secrets: who.secrets };
}

/** The inflation cap for a receive limit of grpc-js options (-1: unlimited; unset: 4 MiB). */
export function inflateCap(maxReceive: number | undefined): number {
  if (maxReceive === undefined) return 4 * 1024 * 1024;
  return maxReceive < 0 ? kMaxLength : maxReceive;
}

/**
 * The edge's gRPC interceptor, first on every call of every service, before
 * grpc-js reads a byte of the request body:
 * - the token is checked from the headers (services not "open"; with a
 *   verifier): a call without a valid token ends UNAUTHENTICATED (a task
 *   token on an admin service PERMISSION_DENIED) and its body is never read,
 *   inflated or decoded. Without a verifier (`--auth none`) every call is
 *   admitted as admin. Whom the token speaks for is kept for the handlers
 *   (principalOfCall, callerOf); a task token's reach to the request's task
 *   is checked by AuthServer once the request is decoded;
 * - a request message that did not decode (a BadRequest) ends the call
 *   INVALID_ARGUMENT; the handler never sees it;
 * - compressed messages are inflated only for admitted callers, capped at
 *   `maxMessageBytes` (./inflate.ts).
 */
export function edgeInterceptor(
  verifier: TokenVerifier | undefined,
  log: Logger,
  maxMessageBytes: number,
): ServerInterceptor {
  let warned = false;
  return (method, call: ServerInterceptingCallInterface) => {
    const policy = policyOfPath(method.path);
    let authenticated = false;
    if (!guardInflation(call, () => authenticated, maxMessageBytes) && !warned) {
      warned = true;
      log.warn("grpc-js internals changed: compressed requests are inflated without our checks");
    }
    const refuse = (err: unknown) => {
      if (err instanceof TaskRouterError)
        log.debug({ method: method.path, reason: err.message }, "denied");
      const e = toGrpcError(err, log, method.path);
      call.sendStatus({
        code: e.code ?? status.INTERNAL,
        details: e.details ?? "",
        metadata: e.metadata ?? new Metadata(),
      });
    };
    return new ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, pass) => {
            const admit = (who: Principal) => {
              admitted.set(metadata, who);
              authenticated = true;
              pass(metadata);
            };
            if (policy === "open") return pass(metadata);
            if (!verifier) return admit(ADMIN);
            verifyCaller(verifier, metadata).then((who) => {
              try {
                if (policy === "admin") authorize(who, "admin");
              } catch (err) {
                return refuse(err);
              }
              admit(who);
            }, refuse);
          },
          onReceiveMessage: (message, pass) => {
            if (message instanceof BadRequest) {
              log.debug({ method: method.path, reason: message.reason }, "malformed request");
              call.sendStatus({
                code: status.INVALID_ARGUMENT,
                details: message.details,
                metadata: new Metadata(),
              });
              return;
            }
            pass(message);
          },
        }),
    });
  };
}
