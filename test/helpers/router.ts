import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { TasksClient } from "../../src/client/admin.ts";
import { RouterClient } from "../../src/client/client.ts";
import { type Daemon, type DaemonConfig, DEFAULT_CONFIG, startDaemon } from "../../src/daemon.ts";

export interface TestRouter {
  address: string;
  daemon: Daemon;
  client: RouterClient;
  tasks: TasksClient;
  dataDir: string;
  /** Creates a task and returns its id. */
  newTask(id?: string): Promise<string>;
  /** Closes the client, the router (killing every exec) and removes the data dir. */
  close(): Promise<void>;
}

/** Starts a router in this process on 127.0.0.1:0 with a fresh data dir. */
export async function startRouter(config: Partial<DaemonConfig> = {}): Promise<TestRouter> {
  const dataDir = await mkdtemp(join(tmpdir(), "taskrouter-test-"));
  const daemon = await startDaemon(
    { ...DEFAULT_CONFIG, listen: "127.0.0.1:0", dataDir, ...config },
    pino({ level: "silent" }),
  );
  const client = new RouterClient(daemon.address);
  const tasks = new TasksClient(client);
  let closed = false;
  return {
    address: daemon.address,
    daemon,
    client,
    tasks,
    dataDir,
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

/** Pids of live processes whose session id is one of `sessions` (each exec leads its own session). */
export async function liveInSessions(sessions: Iterable<number>): Promise<number[]> {
  const want = new Set(sessions);
  const live: number[] = [];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    // Fields after the ")" of comm: state ppid pgrp session ...
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const state = rest[0];
    const session = Number(rest[3]);
    if (want.has(session) && state !== "Z") live.push(Number(name));
  }
  return live;
}

/** Collects an async iterable of buffers into one buffer. */
export async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}
