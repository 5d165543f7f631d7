import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Logger, pino } from "pino";
import { issueToken } from "../../src/auth/tokens.ts";
import { TasksClient } from "../../src/client/admin.ts";
import { RouterClient } from "../../src/client/client.ts";
import { type Daemon, type DaemonConfig, DEFAULT_CONFIG, startDaemon } from "../../src/daemon.ts";

export interface TestRouter {
  address: string;
  daemon: Daemon;
  client: RouterClient;
  tasks: TasksClient;
  dataDir: string;
  /** An admin token (when started with `auth: { mode: "jwt" }`); `client` sends it. */
  adminToken: string | undefined;
  /** Creates a task and returns its id. */
  newTask(id?: string): Promise<string>;
  /** Closes the client, the router (killing every exec) and removes the data dir. */
  close(): Promise<void>;
}

/**
 * Starts a router in this process on 127.0.0.1:0 with a fresh data dir.
 * Authentication is off (`auth: { mode: "none" }`) unless `config.auth` says
 * otherwise; with `{ mode: "jwt" }` the returned client carries an admin token.
 */
export async function startRouter(
  config: Partial<DaemonConfig> = {},
  log: Logger = pino({ level: "silent" }),
): Promise<TestRouter> {
  const dataDir = await mkdtemp(join(tmpdir(), "taskrouter-test-"));
  let daemon: Daemon;
  try {
    daemon = await startDaemon(
      {
        ...DEFAULT_CONFIG,
        listen: "127.0.0.1:0",
        dataDir,
        auth: { mode: "none" },
        // Host tasks unless a test asks for runc (test/helpers/runc.ts).
        runtime: "host",
        ...config,
      },
      log,
    );
  } catch (err) {
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
  const adminToken = daemon.signingKey
    ? await issueToken(daemon.signingKey, { admin: true }, 3_600_000, {
        audience: config.auth?.audience,
      })
    : undefined;
  const client = new RouterClient(daemon.address, adminToken ? { token: adminToken } : {});
  const tasks = new TasksClient(client);
  let closed = false;
  return {
    address: daemon.address,
    daemon,
    client,
    tasks,
    dataDir,
    adminToken,
    newTask: async (id) => (await tasks.create(id ?? "")).taskId,
    close: async () => {
      if (closed) return;
      closed = true;
      client.close();
      await daemon.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Every process now: pid → the fields of /proc/PID/stat after comm (state ppid pgrp session ...). */
export async function processStats(): Promise<Map<number, string[]>> {
  const stats = new Map<number, string[]>();
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    if (stat) stats.set(Number(name), stat.slice(stat.lastIndexOf(")") + 2).split(" "));
  }
  return stats;
}

/** Pids of live processes whose session id is one of `sessions` (each exec leads its own session). */
export async function liveInSessions(sessions: Iterable<number>): Promise<number[]> {
  const want = new Set(sessions);
  const live: number[] = [];
  for (const [pid, [state, , , session]] of await processStats()) {
    if (want.has(Number(session)) && state !== "Z") live.push(pid);
  }
  return live;
}

/** Collects an async iterable of buffers into one buffer. */
export async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}
