import { setMaxListeners } from "node:events";
import type {
  Http2Server,
  ServerOptions as Http2ServerOptions,
  Http2Session,
  IncomingHttpHeaders,
} from "node:http2";
import { createServer, type Server as NetServer, type Socket } from "node:net";
import type { DescService } from "@bufbuild/protobuf";
import { type Server, ServerCredentials } from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import type { Logger } from "pino";
import type { TokenVerifier } from "../../auth/verifier.ts";
import { listenHost } from "../../edge.ts";
import { TaskCommandRouter } from "../../gen/modal_proto/task_command_router_pb.ts";
import { Execs } from "../../gen/taskrouter/v1/execs_pb.ts";
import { Images } from "../../gen/taskrouter/v1/images_pb.ts";
import { MemorySnapshots } from "../../gen/taskrouter/v1/memory_snapshots_pb.ts";
import { Secrets } from "../../gen/taskrouter/v1/secrets_pb.ts";
import { Tasks } from "../../gen/taskrouter/v1/tasks_pb.ts";
import { Volumes } from "../../gen/taskrouter/v1/volumes_pb.ts";
import type { ImageService } from "../../images/service.ts";
import { type Metrics, NO_METRICS } from "../../metrics/metrics.ts";
import type { SecretStore } from "../../secrets/secret-store.ts";
import type { MemorySnapshots as MemorySnapshotStore } from "../../snapshots/memory-snapshots.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import type { TlsKeyPair } from "../../tls/certs.ts";
import type { VolumeStore } from "../../volumes/volume-store.ts";
import { imagesService } from "../admin/admin-images.ts";
import { memorySnapshotsService } from "../admin/admin-memory-snapshots.ts";
import { secretsService } from "../admin/admin-secrets.ts";
import { tasksService } from "../admin/admin-tasks.ts";
import { volumesService } from "../admin/admin-volumes.ts";
import { execsService } from "../admin/execs.ts";
import { routerService } from "../router/index.ts";
import { AuthServer } from "./auth.ts";
import type { ServerDeps } from "./call.ts";
import { type BoundService, bindService } from "./conformance.ts";
import { routeByFirstByte, TLS_HANDSHAKE } from "./first-byte.ts";
import { addReflection, STANDARD_SERVICES } from "./reflection.ts";
import { countRpcs, methodPaths } from "./rpc-metrics.ts";

/** Requests up to this size are accepted (one stdin write can carry 16 MiB; SPEC asks ≥ 100 MiB). */
export const MAX_RECEIVE_MESSAGE = 128 * 1024 * 1024;
/** The HTTP/2 connection's receive window (upstream clients open 64 MiB windows too). */
const WINDOW = 64 * 1024 * 1024;
/**
 * Each stream's receive window. What a client sends past what a call has
 * taken waits in Node's stream buffer as slices of fresh 64 KiB read
 * buffers: they outlive scavenges, and 64 MiB of them per upload drove full
 * collections (docs/DECISIONS.md, "Transport"). 4 MiB keeps a 16 MiB stdin
 * write flowing (libnghttp2 opens the window again at every 2 MiB taken);
 * over a long path `widenForLongPaths` opens more.
 */
const STREAM_WINDOW = 4 * 1024 * 1024;
/** Bytes per second one stream's window must allow over the connection's round trip. */
const STREAM_RATE = 1024 * 1024 * 1024;

/**
 * Over a long path a 4 MiB stream window would cap an upload at 4 MiB per
 * round trip: one PING measures the round trip, and where a stream needs
 * more to move STREAM_RATE the session's stream windows grow to that (at
 * most the connection's window). A failed or late PING changes nothing.
 */
function widenForLongPaths(session: Http2Session): void {
  session.ping((err, ms) => {
    if (err || session.destroyed) return;
    const want = Math.min(WINDOW, Math.ceil((STREAM_RATE * ms) / 1000));
    if (want > STREAM_WINDOW) session.settings({ initialWindowSize: want });
  });
}

/** A connection that sends nothing this long (before TLS/h2c is known) is closed. */
const SNIFF_TIMEOUT_MS = 30_000;

/** How the edge admits calls: token checks (none without a verifier) and TLS. */
export interface EdgeOptions {
  /** Verifies bearer tokens; undefined: `--auth none`, every call is let in. */
  verifier?: TokenVerifier | undefined;
  /** When set, the port serves TLS and cleartext HTTP/2 side by side. */
  tls?: TlsKeyPair | undefined;
}

export interface RouterServer {
  /** The bound address, e.g. 127.0.0.1:7878. */
  address: string;
  /** Stops accepting, ends open calls (UNAVAILABLE for long-running ones) and closes. */
  close(): Promise<void>;
}

/**
 * Serves the TaskCommandRouter service, the admin Tasks service and the
 * standard health and reflection services over HTTP/2 cleartext on `listen`
 * (host:port), and TLS on the same port when `edge.tls` is set. With
 * `edge.verifier`, every call's token is checked first (see ./auth.ts).
 * Every call's method and status are reported to `metrics`.
 */
export async function startServer(
  listen: string,
  tasks: TaskManager,
  log: Logger,
  services: {
    secrets?: SecretStore;
    images?: ImageService;
    volumes?: VolumeStore;
    memorySnapshots?: MemorySnapshotStore;
  } = {},
  edge: EdgeOptions = {},
  metrics: Metrics = NO_METRICS,
): Promise<RouterServer> {
  const shutdown = new AbortController();
  // Every open call listens for shutdown; thousands at once are expected.
  setMaxListeners(0, shutdown.signal);
  const deps: ServerDeps = { log, shutdown: shutdown.signal, metrics };
  const server = new AuthServer(
    edge.verifier,
    log,
    {
      "grpc.max_receive_message_length": MAX_RECEIVE_MESSAGE,
      "grpc.max_send_message_length": 4 * 1024 * 1024,
      "grpc.keepalive_permit_without_calls": 1,
    },
    (taskId) => tasks.createdAt(taskId),
  );
  const bound: BoundService[] = [
    routerService(deps, tasks, services.images, services.volumes, services.memorySnapshots),
    bindService(Tasks, tasksService(deps, tasks, services.memorySnapshots)),
    bindService(Execs, execsService(deps, tasks)),
  ];
  const described: DescService[] = [TaskCommandRouter, Tasks, Execs];
  if (services.images) {
    bound.push(bindService(Images, imagesService(deps, services.images)));
    described.push(Images);
  }
  if (services.memorySnapshots) {
    bound.push(
      bindService(MemorySnapshots, memorySnapshotsService(deps, services.memorySnapshots)),
    );
    described.push(MemorySnapshots);
  }
  if (services.secrets) {
    bound.push(bindService(Secrets, secretsService(deps, services.secrets)));
    described.push(Secrets);
  }
  if (services.volumes) {
    bound.push(bindService(Volumes, volumesService(deps, services.volumes)));
    described.push(Volumes);
  }
  for (const b of bound) server.addService(b.definition, b.implementation);
  new HealthImplementation({ "": "SERVING" }).addToServer(server);
  addReflection(server, described);
  const known = methodPaths([...described, ...STANDARD_SERVICES]);
  const observe = (h2: Http2Server) => metrics !== NO_METRICS && countRpcs(h2, metrics, known);

  const h2c = createInjector(server, ServerCredentials.createInsecure(), log, observe);
  const tls = edge.tls
    ? createInjector(
        server,
        ServerCredentials.createSsl(null, [
          { cert_chain: edge.tls.cert, private_key: edge.tls.key },
        ]),
        log,
        observe,
      )
    : undefined;
  // With TLS on, one port serves both: a TLS handshake starts with 0x16, h2c with "PRI ...".
  const onConnection = (socket: Socket) =>
    tls
      ? routeByFirstByte(socket, SNIFF_TIMEOUT_MS, (b) =>
          (b === TLS_HANDSHAKE ? tls : h2c).injectConnection(socket),
        )
      : h2c.injectConnection(socket);
  const net = createServer({ noDelay: true }, onConnection);
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
 * A grpc-js connection injector whose HTTP/2 sessions open a 64 MiB
 * connection window and 4 MiB stream windows (wider over long paths).
 * grpc-js has no option for the server's windows, so this sets them on its
 * (private) HTTP/2 server options and sessions; when a
 * grpc-js upgrade moves those, we log it and run with Node's defaults.
 * `observe` gets the injector's HTTP/2 server (RPC counts, ./rpc-metrics.ts).
 */
function createInjector(
  server: Server,
  creds: ServerCredentials,
  log: Logger,
  observe: (h2: Http2Server) => void,
) {
  const internals = server as unknown as {
    commonServerOptions?: Http2ServerOptions;
    http2Servers?: Map<Http2Server, unknown>;
  };
  const opts = internals.commonServerOptions;
  if (opts) opts.settings = { ...opts.settings, initialWindowSize: STREAM_WINDOW };
  const before = new Set(internals.http2Servers?.keys() ?? []);
  const injector = server.createConnectionInjector(creds);
  const created = [...(internals.http2Servers?.keys() ?? [])].filter((s) => !before.has(s));
  if (!opts || created.length !== 1) {
    log.warn("grpc-js internals changed: serving with default HTTP/2 windows");
  }
  for (const h2 of created) {
    observe(h2);
    h2.prependListener("stream", keepRepeatedAuthorization);
    h2.on("session", (session) => {
      const open = () => {
        session.setLocalWindowSize(WINDOW);
        widenForLongPaths(session);
      };
      if (session.connecting) session.once("connect", open);
      else open();
    });
  }
  return injector;
}

/**
 * Node's HTTP/2 keeps only the first of several `authorization` headers
 * (it is a single-value header), so grpc-js would see one. Runs before
 * grpc-js's handler and puts all of them back, as a list, into the headers
 * object grpc-js reads next: the edge refuses the call (UNAUTHENTICATED).
 */
function keepRepeatedAuthorization(
  _stream: unknown,
  headers: IncomingHttpHeaders,
  _flags: number,
  raw: string[] | undefined,
): void {
  if (!raw) return;
  const values: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]?.toLowerCase() === "authorization") values.push(raw[i + 1] as string);
  }
  if (values.length > 1) (headers as Record<string, unknown>).authorization = values;
}

function listenOn(net: NetServer, listen: string): Promise<string> {
  const host = listenHost(listen);
  const port = Number(listen.slice(listen.lastIndexOf(":") + 1));
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
