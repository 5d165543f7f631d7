/**
 * A stand-in for the part of Modal's control plane that the JS SDK (npm `modal`)
 * asks before it talks to a task's command router: an auth token, a sandbox's
 * task id, and the router's URL with a task token (test/fixtures/
 * modal_control_plane.proto). A real grpc-js server on 127.0.0.1:0, so the SDK
 * runs unchanged, its own channel and middleware included; it answers for the
 * sandboxes a test registers and NOT_FOUND for any other.
 */
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const PROTO = fileURLToPath(new URL("../fixtures/modal_control_plane.proto", import.meta.url));
const def = protoLoader.loadSync(PROTO, { keepCase: true, defaults: true });
const service = (def["modal.client.ModalClient"] as grpc.ServiceDefinition) ?? undefined;

/** Where the SDK finds one sandbox's task and how it reaches the router. */
export interface SandboxRoute {
  taskId: string;
  /** The router's URL as the SDK wants it: `https://HOST:PORT`. */
  routerUrl: string;
  /**
   * The token the SDK sends to the router (a task token); a function is asked for a token
   * on every call that hands one out (the SDK asks again after an UNAUTHENTICATED).
   */
  jwt: string | (() => Promise<string>);
}

export interface ControlPlane {
  /** `http://127.0.0.1:PORT`: the SDK's `endpoint`. */
  endpoint: string;
  /** Makes `sandboxId` resolvable by the SDK. */
  add(sandboxId: string, route: SandboxRoute): void;
  /** The methods called so far, in order (e.g. "SandboxGetTaskId"). */
  calls: string[];
  close(): Promise<void>;
}

/** A token shaped like the control plane's (a JWT whose `exp` the SDK reads); never verified. */
function authToken(): string {
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const exp = Math.floor(Date.now() / 1000) + 3600;
  return `${b64({ alg: "none", typ: "JWT" })}.${b64({ exp })}.`;
}

export async function startControlPlane(): Promise<ControlPlane> {
  if (!service) throw new Error(`no ModalClient service in ${PROTO}`);
  const routes = new Map<string, SandboxRoute>();
  const calls: string[] = [];
  type Unary = grpc.handleUnaryCall<Record<string, unknown>, Record<string, unknown>>;
  type Found = [what: string, route: SandboxRoute | undefined];
  /** A call that finds a route by its request and answers from it, NOT_FOUND without one. */
  const fromRoute =
    (
      name: string,
      find: (req: Record<string, unknown>) => Found,
      reply: (r: SandboxRoute) => Record<string, unknown> | Promise<Record<string, unknown>>,
    ): Unary =>
    (call, cb) => {
      calls.push(name);
      const [what, route] = find(call.request);
      if (!route) cb({ code: grpc.status.NOT_FOUND, details: `${what} not found` });
      else
        Promise.resolve(reply(route)).then(
          (answer) => cb(null, answer),
          (err: unknown) => cb({ code: grpc.status.INTERNAL, details: String(err) }),
        );
    };
  const bySandbox = (req: Record<string, unknown>): Found => {
    const id = String(req.sandbox_id);
    return [`sandbox ${id}`, routes.get(id)];
  };
  const byTask = (req: Record<string, unknown>): Found => {
    const id = String(req.task_id);
    return [`task ${id}`, [...routes.values()].find((r) => r.taskId === id)];
  };
  const task = (r: SandboxRoute) => ({ task_id: r.taskId });
  const access = async (r: SandboxRoute) => ({
    jwt: typeof r.jwt === "string" ? r.jwt : await r.jwt(),
    url: r.routerUrl,
  });
  const handlers: Record<string, Unary> = {
    AuthTokenGet: (_call, cb) => {
      calls.push("AuthTokenGet");
      cb(null, { token: authToken() });
    },
    SandboxGetTaskId: fromRoute("SandboxGetTaskId", bySandbox, task),
    SandboxGetTaskIdV2: fromRoute("SandboxGetTaskIdV2", bySandbox, task),
    SandboxGetCommandRouterAccess: fromRoute("SandboxGetCommandRouterAccess", bySandbox, access),
    TaskGetCommandRouterAccess: fromRoute("TaskGetCommandRouterAccess", byTask, access),
  };
  const server = new grpc.Server();
  server.addService(service, handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return {
    endpoint: `http://127.0.0.1:${port}`,
    add: (sandboxId, route) => void routes.set(sandboxId, route),
    calls,
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
      }),
  };
}
