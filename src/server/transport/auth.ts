import {
  type Metadata,
  Server,
  type ServerOptions,
  type ServiceDefinition,
  type UntypedHandleCall,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import type { Logger } from "pino";
import { authorize, type Need } from "../../auth/tokens.ts";
import type { TokenVerifier } from "../../auth/verifier.ts";
import { TaskRouterError, UnauthenticatedError } from "../../errors.ts";
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
  "grpc.health.v1.Health": "open",
};

/** The full name of a grpc-js service definition (from its methods' paths). */
export function serviceName(def: ServiceDefinition): string {
  const first = Object.values(def)[0];
  return first ? (first.path.split("/")[1] ?? "") : "";
}

const BEARER = /^Bearer +([^ ]+) *$/i;

/**
 * Checks a call's `authorization: Bearer <JWT>` against `policy` (and, for
 * "task", the request's task id). Unauthenticated: no, several or a
 * non-Bearer authorization header, or a bad token; PermissionDenied: a valid
 * token that does not reach the call. Messages never contain the token.
 */
export async function checkCall(
  verifier: TokenVerifier,
  policy: AccessPolicy,
  metadata: Metadata,
  request: unknown,
): Promise<void> {
  if (policy === "open") return;
  const values = metadata.get("authorization");
  if (values.length === 0) {
    throw new UnauthenticatedError("missing authorization: send 'authorization: Bearer <token>'");
  }
  const m = values.length === 1 && typeof values[0] === "string" ? BEARER.exec(values[0]) : null;
  if (!m?.[1]) {
    throw new UnauthenticatedError("malformed authorization: expected 'Bearer <token>'");
  }
  const who = await verifier.verify(m[1]);
  let need: Need = "admin";
  if (policy === "task") {
    const taskId = (request as { taskId?: unknown } | null)?.taskId;
    need = { task: typeof taskId === "string" ? taskId : "" };
  }
  authorize(who, need);
}

/**
 * A grpc-js Server that puts the token check in front of every handler of
 * every service added to it (the policy comes from SERVICE_POLICY), so it
 * runs before any other work. Without a verifier (`--auth none`) it adds
 * services unchanged.
 */
export class AuthServer extends Server {
  constructor(
    private readonly verifier: TokenVerifier | undefined,
    private readonly log: Logger,
    options?: ServerOptions,
  ) {
    super(options);
  }

  override addService(service: ServiceDefinition, impl: UntypedServiceImplementation): void {
    const policy = SERVICE_POLICY[serviceName(service)] ?? "admin";
    if (!this.verifier || policy === "open") {
      super.addService(service, impl);
      return;
    }
    const guarded: UntypedServiceImplementation = { ...impl };
    for (const [name, def] of Object.entries(service)) {
      const key = name in impl ? name : def.originalName;
      const handler = key === undefined ? undefined : impl[key];
      if (key === undefined || !handler) continue;
      if (policy === "task" && def.requestStream) {
        throw new Error(`${def.path}: a task-scoped method needs its request before the stream`);
      }
      guarded[key] = this.guard(def.path, policy, handler.bind(impl), def.responseStream);
    }
    super.addService(service, guarded);
  }

  private guard(
    method: string,
    policy: AccessPolicy,
    handler: UntypedHandleCall,
    responseStream: boolean,
  ): UntypedHandleCall {
    const verifier = this.verifier as TokenVerifier;
    const log = this.log;
    // biome-ignore lint/suspicious/noExplicitAny: grpc-js hands each call kind its own (call, callback?) pair
    return ((call: any, callback?: (err: unknown) => void) => {
      checkCall(verifier, policy, call.metadata, call.request).then(
        () => {
          if (!call.cancelled) (handler as (c: unknown, cb?: unknown) => void)(call, callback);
        },
        (err: unknown) => {
          if (err instanceof TaskRouterError) log.debug({ method, reason: err.message }, "denied");
          const status = toGrpcError(err, log, method);
          if (responseStream || !callback) call.emit("error", status);
          else callback(status);
        },
      );
    }) as UntypedHandleCall;
  }
}
