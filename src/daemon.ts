import { mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Logger } from "pino";
import { HostRuntime } from "./runtime/host/host-runtime.ts";
import type { Runtime } from "./runtime/runtime.ts";
import { type RouterServer, startServer } from "./server/server.ts";
import { TaskManager } from "./tasks/task-manager.ts";

/** Everything `taskrouter serve` can be told; defaults in DEFAULT_CONFIG. */
export interface DaemonConfig {
  listen: string;
  dataDir: string;
  runtime: "host";
  /** How long finished execs (and their output) are kept, ms. */
  retentionMs: number;
  /** Bytes of output kept per exec before the command is paused. */
  outputCap: number;
  /** Bytes of output per stream kept in memory before spilling to disk. */
  memoryLimit: number;
  /** Grace for descendants holding an output pipe after the command exited, ms. */
  drainGraceMs: number;
  maxExecsPerTask: number;
}

export const DEFAULT_CONFIG: DaemonConfig = {
  listen: "127.0.0.1:7878",
  dataDir: "./.taskrouter",
  runtime: "host",
  retentionMs: 60 * 60 * 1000,
  outputCap: 1024 * 1024 * 1024,
  memoryLimit: 8 * 1024 * 1024,
  drainGraceMs: 1000,
  maxExecsPerTask: 10_000,
};

export interface Daemon {
  address: string;
  runtime: Runtime;
  tasks: TaskManager;
  /** Stops serving, then kills every exec (no child is left behind). */
  close(): Promise<void>;
}

/** The one place that wires the router: runtime, task manager, server. */
export async function startDaemon(config: DaemonConfig, log: Logger): Promise<Daemon> {
  const dataDir = resolve(config.dataDir);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const runtime = new HostRuntime(dataDir);
  if (runtime.warning) log.warn(runtime.warning);
  const runtimes = new Map<string, Runtime>([[runtime.name, runtime]]);
  const tasks = new TaskManager(dataDir, runtimes, runtime.name, {
    memoryLimit: config.memoryLimit,
    outputCap: config.outputCap,
    drainGraceMs: config.drainGraceMs,
    retentionMs: config.retentionMs,
    maxExecsPerTask: config.maxExecsPerTask,
    spillDir: join(dataDir, "spill"),
    onError: (err) => log.error({ err }, "output spill failed"),
  });
  await tasks.load();
  let server: RouterServer;
  try {
    server = await startServer(config.listen, tasks, log);
  } catch (err) {
    await tasks.shutdown();
    throw err;
  }
  return {
    address: server.address,
    runtime,
    tasks,
    close: async () => {
      await server.close();
      await tasks.shutdown();
    },
  };
}
