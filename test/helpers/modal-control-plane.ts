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
  /** The token the SDK sends to the router (a task token). */
  jwt: string;
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
  const byTask = (taskId: string) => [...routes.values()].find((r) => r.taskId === taskId);
  const notFound = (what: string) => ({
    code: grpc.status.NOT_FOUND,
    details: `${what} not found`,
  });
  type Unary = grpc.handleUnaryCall<Record<string, unknown>, Record<string, unknown>>;
  const taskId = (name: string, ...[call, cb]: Parameters<Unary>) => {
    calls.push(name);
    const id = String(call.request.sandbox_id);
    const route = routes.get(id);
    if (!route) cb(notFound(`sandbox ${id}`));
    else cb(null, { task_id: route.taskId });
  };
  const handlers: Record<string, Unary> = {
    AuthTokenGet: (_call, cb) => {
      calls.push("AuthTokenGet");
      cb(null, { token: authToken() });
    },
    SandboxGetTaskId: (call, cb) => taskId("SandboxGetTaskId", call, cb),
    SandboxGetTaskIdV2: (call, cb) => taskId("SandboxGetTaskIdV2", call, cb),
    SandboxGetCommandRouterAccess: (call, cb) => {
      calls.push("SandboxGetCommandRouterAccess");
      const id = String(call.request.sandbox_id);
      const route = routes.get(id);
      if (!route) cb(notFound(`sandbox ${id}`));
      else cb(null, { jwt: route.jwt, url: route.routerUrl });
    },
    TaskGetCommandRouterAccess: (call, cb) => {
      calls.push("TaskGetCommandRouterAccess");
      const id = String(call.request.task_id);
      const route = byTask(id);
      if (!route) cb(notFound(`task ${id}`));
      else cb(null, { jwt: route.jwt, url: route.routerUrl });
    },
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
