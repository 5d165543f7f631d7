import { mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Logger } from "pino";
import type { SigningKey } from "./auth/keys.ts";
import { type AuthConfig, prepareEdge, type TlsConfig } from "./edge.ts";
import { systemArgMax } from "./exec/exec-request.ts";
import type { RegistryConfig } from "./images/registry/remote.ts";
import { ImageService } from "./images/service.ts";
import { taskFsLookup } from "./images/task-fs.ts";
import { type Metrics, NO_METRICS } from "./metrics/metrics.ts";
import type { MetricsServer } from "./metrics/serve.ts";
import { HostRuntime } from "./runtime/host/host-runtime.ts";
import { taskSubnet } from "./runtime/network/task-networks.ts";
import { probeOciRuntime } from "./runtime/runc/oci-cli.ts";
import { RuncRuntime, TASK_SECCOMP_CAPS } from "./runtime/runc/runc-runtime.ts";
import { loadSeccomp } from "./runtime/runc/seccomp.ts";
import type { Runtime } from "./runtime/runtime.ts";
import { SecretStore } from "./secrets/secret-store.ts";
import { type RouterServer, startServer } from "./server/transport/server.ts";
import { DEFAULT_MEMORY_SNAPSHOT_TTL_MS, MemorySnapshots } from "./snapshots/memory-snapshots.ts";
import { TaskManager } from "./tasks/task-manager.ts";
import { tuneMalloc } from "./util/malloc-thresholds.ts";
import { snapshotProgress } from "./util/progress.ts";
import { LocalVolumeBackend } from "./volumes/backend.ts";
import { StoreTaskVolumes } from "./volumes/task-volumes.ts";
import { VolumeStore } from "./volumes/volume-store.ts";

/** Everything `taskrouter serve` can be told; defaults in DEFAULT_CONFIG. */
export interface DaemonConfig {
  listen: string;
  dataDir: string;
  /**
   * The runtime of tasks created without one: "runc" (containers), "host" (no
   * isolation), or "auto": runc when running as root with a working OCI
   * runtime, otherwise host. Both are registered when available.
   */
  runtime: "auto" | "host" | "runc";
  /** The OCI runtime binary of the runc runtime (runc, crun, runsc: same CLI). */
  ociRuntime: string;
  /**
   * The seccomp filter of runc tasks created from now on: "default" (Docker's
   * default profile), "unconfined", or the path of a profile file.
   */
  seccomp: string;
  /** The IPv4 block `--network open` tasks get their /30s from; undefined: DEFAULT_TASK_SUBNET. */
  taskSubnet?: string | undefined;
  /** How long finished execs (and their output) are kept, ms. */
  retentionMs: number;
  /** Bytes of output kept per exec before the command is paused. */
  outputCap: number;
  /** Bytes of output per stream kept in memory before spilling to disk. */
  memoryLimit: number;
  /** Grace for descendants holding an output pipe after the command exited, ms. */
  drainGraceMs: number;
  /** Bytes of each stream of a task's entrypoint kept (older ones are dropped); unset: 16 MiB. */
  entrypointRetain?: number | undefined;
  maxExecsPerTask: number;
  /** Token checks: "jwt" (default) or "none" (loopback listen addresses only). */
  auth: AuthConfig;
  /** TLS beside cleartext HTTP/2 on the same port; undefined: cleartext only. */
  tls?: TlsConfig | undefined;
  /** Execs may ask for `runtime_debug` (PERMISSION_DENIED otherwise). */
  allowRuntimeDebug: boolean;
  /** A PTY session whose stdin stays idle this long is ended (unless it opted out), ms; 0: never. */
  ptyIdleTimeoutMs: number;
  /** Serve Prometheus metrics at http://HOST:PORT/metrics; undefined: no metrics. */
  metricsListen?: string | undefined;
  /** Share images through this OCI registry repository (`--registry`); undefined: none. */
  registry?: RegistryConfig | undefined;
  /** Memory snapshots are deleted this long after they were taken, ms (`--memory-snapshot-ttl`). */
  memorySnapshotTtlMs: number;
}

export const DEFAULT_CONFIG: DaemonConfig = {
  listen: "127.0.0.1:7878",
  dataDir: "./.taskrouter",
  runtime: "auto",
  ociRuntime: "runc",
  seccomp: "default",
  retentionMs: 60 * 60 * 1000,
  // Above the filesystem helper's 5 GiB read limit (FS-TOOLS.md §6), so an SDK read never stalls.
  outputCap: 6 * 1024 * 1024 * 1024,
  memoryLimit: 8 * 1024 * 1024,
  drainGraceMs: 1000,
  maxExecsPerTask: 10_000,
  auth: { mode: "jwt" },
  allowRuntimeDebug: false,
  ptyIdleTimeoutMs: 10 * 60 * 1000,
  memorySnapshotTtlMs: DEFAULT_MEMORY_SNAPSHOT_TTL_MS,
};

export interface Daemon {
  address: string;
  runtime: Runtime;
  tasks: TaskManager;
  /** The image store and mounts (TaskMountDirectory, snapshots). */
  images: ImageService;
  /** "none" when calls are not authenticated (`--auth none`). */
  auth: "jwt" | "none";
  /** The router's token signing key (auth "jwt"), in `<data-dir>/auth/`. */
  signingKey: SigningKey | undefined;
  /** The TLS certificate file served (TLS on), for clients' `--tls-ca`. */
  tlsCertFile: string | undefined;
  /** Where Prometheus metrics are served (`metricsListen`), e.g. 127.0.0.1:9464. */
  metricsAddress: string | undefined;
  /** Stops serving, then kills every exec (no child is left behind). */
  close(): Promise<void>;
}

/**
 * The runtimes of this router: host always, runc when it can run containers
 * here (root and a working OCI runtime). Asking for runc where it cannot run
 * is an error that says why.
 */
async function makeRuntimes(
  config: DaemonConfig,
  dataDir: string,
  log: Logger,
): Promise<Map<string, Runtime>> {
  const host = new HostRuntime(dataDir);
  const runtimes = new Map<string, Runtime>([[host.name, host]]);
  let why = await probeOciRuntime(config.ociRuntime);
  if (why === undefined) {
    try {
      const runc = await RuncRuntime.create(dataDir, config.ociRuntime, {
        seccomp: config.seccomp,
        runtimeDebug: config.allowRuntimeDebug,
        taskSubnet: config.taskSubnet,
      });
      runtimes.set(runc.name, runc);
    } catch (err) {
      why = (err as Error).message;
    }
  }
  if (why !== undefined) {
    if (config.runtime === "runc") throw new Error(`the runc runtime cannot run here: ${why}`);
    log.info({ reason: why }, "runc runtime unavailable");
  }
  return runtimes;
}

/** The one place that wires the router: runtime, task manager, server. */
export async function startDaemon(config: DaemonConfig, log: Logger): Promise<Daemon> {
  const dataDir = resolve(config.dataDir);
  // A bad profile file stops the start, whichever runtime ends up the default.
  loadSeccomp(config.seccomp, TASK_SECCOMP_CAPS);
  taskSubnet(config.taskSubnet); // so is a bad --task-subnet
  const untuned = tuneMalloc();
  if (untuned) {
    log[untuned.expected ? "info" : "warn"](
      { reason: untuned.reason },
      "malloc thresholds not applied",
    );
  }

  // A bad --registry (form, auth file) stops the start; the registry itself may be down.
  const remote = config.registry
    ? (await import("./images/registry/remote.ts")).registryRemote(config.registry, log)
    : undefined;
  const edge = await prepareEdge(config.listen, dataDir, config.auth, config.tls, log);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const runtimes = await makeRuntimes(config, dataDir, log);
  const runtime = runtimes.get(
    config.runtime === "auto" ? (runtimes.has("runc") ? "runc" : "host") : config.runtime,
  ) as Runtime;
  if (runtime.warning) log.warn(runtime.warning);
  const secrets = await SecretStore.open(join(dataDir, "secrets"), (msg) => log.warn(msg));
  const volumesDir = join(dataDir, "volumes");
  const volumes = await VolumeStore.open(
    volumesDir,
    new LocalVolumeBackend(join(volumesDir, "local")),
    (msg) => log.warn(msg),
  );
  let tasks: TaskManager | undefined;
  const prom = config.metricsListen
    ? await import("./metrics/prometheus.ts").then(
        (m) =>
          new m.PrometheusMetrics({
            tasks: () => tasks?.list().length ?? 0,
            execs: () =>
              (tasks?.list() ?? []).reduce(
                (n, t) => n + t.listExecs().filter((e) => e.running).length,
                0,
              ),
          }),
      )
    : undefined;
  const metrics: Metrics = prom ?? NO_METRICS;
  tasks = new TaskManager(
    dataDir,
    runtimes,
    runtime.name,
    {
      secrets,
      memoryLimit: config.memoryLimit,
      outputCap: config.outputCap,
      drainGraceMs: config.drainGraceMs,
      retentionMs: config.retentionMs,
      maxExecsPerTask: config.maxExecsPerTask,
      allowRuntimeDebug: config.allowRuntimeDebug,
      ptyIdleTimeoutMs: config.ptyIdleTimeoutMs,
      ...(config.entrypointRetain ? { entrypointRetain: config.entrypointRetain } : {}),
      spillDir: join(dataDir, "spill"),
      onError: (err) => log.error({ err }, "output spill failed"),
      onWarn: (msg) => log.warn(msg),
    },
    metrics,
    new StoreTaskVolumes(volumes, (msg) => log.warn(msg)),
  );
  // Made before the tasks load: runc tasks rooted on an image hold it again when adopted.
  const images = new ImageService(dataDir, taskFsLookup(tasks, dataDir), {
    onSnapshotProgress: snapshotProgress(),
    ...(remote ? { remote: (store) => remote(store, metrics) } : {}),
  });
  // Runtimes that can root tasks on stored images find them in the image store.
  for (const r of runtimes.values()) {
    r.useImages?.((id, o) => images.acquireUnpacked(id, { expired: o.existing }));
  }
  await tasks.load();
  // Images: mounts of tasks that outlive the router (runc) are adopted, the others removed.
  const runtimeOf = (taskId: string) => tasks.list().find((t) => t.id === taskId)?.runtime.name;
  const endsWithRouter = (r: { taskId: string }) => (runtimeOf(r.taskId) ?? "host") === "host";
  await images.init((r) => !endsWithRouter(r));
  tasks.onTeardown((taskId) => images.teardownTask(taskId));
  const memorySnapshots = new MemorySnapshots(join(dataDir, "memory-snapshots"), tasks, {
    ttlMs: config.memorySnapshotTtlMs,
    onError: (err) => log.error({ err }, "memory snapshots"),
  });
  await memorySnapshots.load();
  let server: RouterServer;
  let metricsServer: MetricsServer | undefined;
  try {
    systemArgMax(); // read once now, not in the first TaskExecStart
    server = await startServer(
      config.listen,
      tasks,
      log,
      { secrets, images, volumes, memorySnapshots },
      edge,
      metrics,
    );
    if (prom && config.metricsListen) {
      const { serveMetrics } = await import("./metrics/serve.ts");
      metricsServer = await serveMetrics(config.metricsListen, prom.registry).catch(
        async (err: unknown) => {
          await server.close();
          throw err;
        },
      );
    }
  } catch (err) {
    memorySnapshots.close();
    await tasks.shutdown();
    await images.shutdown(endsWithRouter);
    await Promise.all([...runtimes.values()].map((r) => r.close?.()));
    throw err;
  }
  return {
    address: server.address,
    runtime,
    tasks,
    images,
    auth: edge.auth,
    signingKey: edge.signingKey,
    tlsCertFile: edge.tls?.certFile,
    metricsAddress: metricsServer?.address,
    close: async () => {
      await metricsServer?.close();
      await server.close();
      memorySnapshots.close();
      await tasks.shutdown();
      await images.shutdown(endsWithRouter);
      await Promise.all([...runtimes.values()].map((r) => r.close?.()));
    },
  };
}
