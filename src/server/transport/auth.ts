import {
  Server,
  type ServerOptions,
  type ServiceDefinition,
  type UntypedHandleCall,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import type { Logger } from "pino";
import { authorize, type Need, type Principal } from "../../auth/tokens.ts";
import type { TokenVerifier } from "../../auth/verifier.ts";
import { TaskRouterError, UnauthenticatedError } from "../../errors.ts";
import { lenientRequests } from "./bad-request.ts";
import { edgeInterceptor, inflateCap, policyOfPath, principalOfCall, serviceName } from "./edge.ts";
import { pooledDecoding, pooledRequests } from "./pooled-decoder.ts";
import { toGrpcError } from "./status.ts";

export { type AccessPolicy, SERVICE_POLICY, serviceName } from "./edge.ts";

/** What a task-scoped request needs: a token for its `task_id`. */
function needOf(request: unknown, createdAt: TaskCreatedAt): Need {
  const taskId = (request as { taskId?: unknown } | null)?.taskId;
  return taskNeed(typeof taskId === "string" ? taskId : "", createdAt);
}

/** When the task `taskId` now on the router was created (ms), undefined when there is none. */
export type TaskCreatedAt = (taskId: string) => number | undefined;

function taskNeed(task: string, createdAt: TaskCreatedAt): Need {
  return { task, createdAtMs: task === "" ? undefined : createdAt(task) };
}

/**
 * The task id of a client stream's first message: the `start` message of its
 * `payload` oneof (TaskExecStdinWriteStream), "" when it has none.
 */
function streamTaskId(first: unknown): string {
  const p = (first as { payload?: { case?: unknown; value?: { taskId?: unknown } } } | null)
    ?.payload;
  return p?.case === "start" && typeof p.value?.taskId === "string" ? p.value.taskId : "";
}

/** Who an admitted call speaks for; Unauthenticated if the edge did not admit it (fail closed). */
function admittedCaller(metadata: unknown): Principal {
  const who = principalOfCall(metadata as Parameters<typeof principalOfCall>[0]);
  if (!who) throw new UnauthenticatedError("the call was not authenticated");
  return who;
}

/**
 * A grpc-js Server with the edge in front of every service added to it:
 * - the edge interceptor (./edge.ts) checks the token from the headers,
 *   before any byte of the body is read, refuses what is not admitted, and
 *   answers INVALID_ARGUMENT for request messages that do not decode (every
 *   service's request deserializers are made lenient, ./bad-request.ts);
 * - for task-scoped services ("task" in SERVICE_POLICY) the token's reach to
 *   the request's task is checked once the request is decoded, before the
 *   handler runs (client streams: before the handler sees their first
 *   message).
 * Without a verifier (`--auth none`) every call is admitted as admin, and
 * malformed bodies are still INVALID_ARGUMENT.
 */
export class AuthServer extends Server {
  constructor(
    private readonly verifier: TokenVerifier | undefined,
    private readonly log: Logger,
    options: ServerOptions = {},
    private readonly createdAt: TaskCreatedAt = () => undefined,
  ) {
    const cap = inflateCap(options["grpc.max_receive_message_length"]);
    super({
      ...options,
      interceptors: [
        edgeInterceptor(verifier, log, cap),
        pooledDecoding(log),
        ...(options.interceptors ?? []),
      ],
    });
  }

  override addService(service: ServiceDefinition, impl: UntypedServiceImplementation): void {
    const def = pooledRequests(lenientRequests(service));
    if (!this.verifier || policyOfPath(`/${serviceName(service)}/`) !== "task") {
      super.addService(def, impl);
      return;
    }
    // Built from the definition only, each handler found as grpc-js finds it (by name, else by
    // original name): nothing of `impl` reaches grpc-js unguarded, and a method without a
    // handler stays UNIMPLEMENTED.
    const guarded: UntypedServiceImplementation = {};
    for (const [name, m] of Object.entries(def)) {
      const handler =
        impl[name] ?? (m.originalName === undefined ? undefined : impl[m.originalName]);
      if (!handler) continue;
      guarded[name] = m.requestStream
        ? this.guardTaskStream(handler.bind(impl))
        : this.guardTask(m.path, handler.bind(impl), m.responseStream);
    }
    super.addService(def, guarded);
  }

  /**
   * A task-scoped client stream: the reach of the call's token against the
   * task of the stream's first (`start`) message is checked before the
   * handler sees that message. A refused stream ends with the error (through
   * the handler's own error path) and the handler gets no message.
   */
  private guardTaskStream(handler: UntypedHandleCall): UntypedHandleCall {
    const createdAt = this.createdAt;
    // biome-ignore lint/suspicious/noExplicitAny: grpc-js's ServerReadableStream and its callback
    return ((call: any, callback: (err: unknown) => void) => {
      const inner = call[Symbol.asyncIterator].bind(call) as () => AsyncIterator<unknown>;
      call[Symbol.asyncIterator] = async function* () {
        const it = inner();
        let first = true;
        while (true) {
          const next = await it.next();
          if (next.done) return;
          if (first) {
            first = false;
            authorize(admittedCaller(call.metadata), taskNeed(streamTaskId(next.value), createdAt));
          }
          yield next.value;
        }
      };
      (handler as (c: unknown, cb: unknown) => void)(call, callback);
    }) as UntypedHandleCall;
  }

  /** A task-scoped unary or server-streaming call: the token must reach the request's task. */
  private guardTask(
    method: string,
    handler: UntypedHandleCall,
    responseStream: boolean,
  ): UntypedHandleCall {
    const log = this.log;
    // biome-ignore lint/suspicious/noExplicitAny: grpc-js hands each call kind its own (call, callback?) pair
    return ((call: any, callback?: (err: unknown) => void) => {
      try {
        authorize(admittedCaller(call.metadata), needOf(call.request, this.createdAt));
      } catch (err) {
        if (err instanceof TaskRouterError) log.debug({ method, reason: err.message }, "denied");
        const status = toGrpcError(err, log, method);
        if (responseStream || !callback) call.emit("error", status);
        else callback(status);
        return;
      }
      (handler as (c: unknown, cb?: unknown) => void)(call, callback);
    }) as UntypedHandleCall;
  }
}
