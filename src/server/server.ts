import type { Http2Server, ServerOptions as Http2ServerOptions } from "node:http2";
import { createServer, type Server as NetServer, type Socket } from "node:net";
import { Server, ServerCredentials, type UntypedServiceImplementation } from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import type { Logger } from "pino";
import { TaskCommandRouter } from "../gen/modal_proto/task_command_router_pb.ts";
import { Tasks } from "../gen/taskrouter/v1/tasks_pb.ts";
import { grpcServiceDef } from "../rpc/service-def.ts";
import type { TaskManager } from "../tasks/task-manager.ts";
import { tasksService } from "./admin-tasks.ts";
import type { ServerDeps } from "./call.ts";
import { taskExecPoll } from "./exec-poll.ts";
import { taskExecStart } from "./exec-start.ts";
import { taskExecStdinWrite } from "./exec-stdin-write.ts";
import { taskExecStdioRead } from "./exec-stdio-read.ts";
import { taskExecWait } from "./exec-wait.ts";
import { taskMountDirectory } from "./mount-directory.ts";
import { taskSnapshotDirectory } from "./snapshot-directory.ts";

/** Requests up to this size are accepted (one stdin write can carry 16 MiB; SPEC asks ≥ 100 MiB). */
export const MAX_RECEIVE_MESSAGE = 128 * 1024 * 1024;
/** HTTP/2 flow-control windows we open (upstream clients open 64 MiB windows too). */
const WINDOW = 64 * 1024 * 1024;

export interface RouterServer {
  /** The bound address, e.g. 127.0.0.1:7878. */
  address: string;
  /** Stops accepting, ends open calls (UNAVAILABLE for long-running ones) and closes. */
  close(): Promise<void>;
}

/**
 * Serves the TaskCommandRouter service, the admin Tasks service and the
 * standard health service over HTTP/2 cleartext on `listen` (host:port).
 */
export async function startServer(
  listen: string,
  tasks: TaskManager,
  log: Logger,
): Promise<RouterServer> {
  const shutdown = new AbortController();
  const deps: ServerDeps = { log, shutdown: shutdown.signal };
  const server = new Server({
    "grpc.max_receive_message_length": MAX_RECEIVE_MESSAGE,
    "grpc.max_send_message_length": 4 * 1024 * 1024,
    "grpc.keepalive_permit_without_calls": 1,
  });
  const router = {
    taskExecPoll: taskExecPoll(deps, tasks),
    taskExecStart: taskExecStart(deps, tasks),
    taskExecStdinWrite: taskExecStdinWrite(deps, tasks),
    taskExecStdioRead: taskExecStdioRead(deps, tasks),
    taskExecWait: taskExecWait(deps, tasks),
    taskMountDirectory: taskMountDirectory(deps),
    taskSnapshotDirectory: taskSnapshotDirectory(deps),
  };
  server.addService(grpcServiceDef(TaskCommandRouter), router as UntypedServiceImplementation);
  server.addService(
    grpcServiceDef(Tasks),
    tasksService(deps, tasks) as unknown as UntypedServiceImplementation,
  );
  new HealthImplementation({ "": "SERVING" }).addToServer(server);

  const h2c = createInjector(server, ServerCredentials.createInsecure(), log);
  const net = createServer({ noDelay: true }, (socket: Socket) => h2c.injectConnection(socket));
  const address = await listenOn(net, listen);
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        net.close();
        shutdown.abort();
        const force = setTimeout(() => server.forceShutdown(), 2000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      }),
  };
}

/**
 * A grpc-js connection injector whose HTTP/2 sessions open 64 MiB
 * flow-control windows. grpc-js has no option for the server's windows, so
 * this sets them on its (private) HTTP/2 server options and sessions; when a
 * grpc-js upgrade moves those, we log it and run with Node's defaults.
 */
function createInjector(server: Server, creds: ServerCredentials, log: Logger) {
  const internals = server as unknown as {
    commonServerOptions?: Http2ServerOptions;
    http2Servers?: Map<Http2Server, unknown>;
  };
  const opts = internals.commonServerOptions;
  if (opts) opts.settings = { ...opts.settings, initialWindowSize: WINDOW };
  const before = new Set(internals.http2Servers?.keys() ?? []);
  const injector = server.createConnectionInjector(creds);
  const created = [...(internals.http2Servers?.keys() ?? [])].filter((s) => !before.has(s));
  if (!opts || created.length !== 1) {
    log.warn("grpc-js internals changed: serving with default HTTP/2 windows");
  }
  for (const h2 of created) {
    h2.on("session", (session) => {
      session.once("connect", () => session.setLocalWindowSize(WINDOW));
      if (!session.connecting) session.setLocalWindowSize(WINDOW);
    });
  }
  return injector;
}

function listenOn(net: NetServer, listen: string): Promise<string> {
  const i = listen.lastIndexOf(":");
  const host = listen.slice(0, i).replace(/^\[|\]$/g, "") || "127.0.0.1";
  const port = Number(listen.slice(i + 1));
  return new Promise((resolve, reject) => {
    net.once("error", reject);
    net.listen(port, host, () => {
      net.off("error", reject);
      const a = net.address();
      if (!a || typeof a === "string") return reject(new Error("no address"));
      resolve(a.family === "IPv6" ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`);
    });
  });
}
