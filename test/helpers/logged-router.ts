/** A test router (as startRouter's) whose warnings and errors are kept for assertions. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { issueToken } from "../../src/auth/tokens.ts";
import { TasksClient } from "../../src/client/admin.ts";
import { RouterClient } from "../../src/client/client.ts";
import { type DaemonConfig, DEFAULT_CONFIG, startDaemon } from "../../src/daemon.ts";
import type { TestRouter } from "./router.ts";

export interface LoggedRouter extends TestRouter {
  /** Log records at warn level or above so far (parsed pino lines). */
  readonly logs: Record<string, unknown>[];
}

/**
 * Starts a router in this process on 127.0.0.1:0 (host runtime, fresh data
 * dir, auth off unless `config.auth` says otherwise), like startRouter, but
 * logging warnings and errors into `logs`.
 */
export async function startLoggedRouter(config: Partial<DaemonConfig> = {}): Promise<LoggedRouter> {
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: "warn" }, { write: (s: string) => void logs.push(JSON.parse(s)) });
  const dataDir = await mkdtemp(join(tmpdir(), "taskrouter-test-"));
  const daemon = await startDaemon(
    {
      ...DEFAULT_CONFIG,
      listen: "127.0.0.1:0",
      dataDir,
      auth: { mode: "none" },
      runtime: "host",
      ...config,
    },
    log,
  ).catch(async (err: unknown) => {
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  });
  const adminToken = daemon.signingKey
    ? await issueToken(daemon.signingKey, { admin: true }, 3_600_000)
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
    logs,
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
