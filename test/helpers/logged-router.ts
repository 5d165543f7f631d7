/** A test router (as startRouter's) whose warnings and errors are kept for assertions. */
import { pino } from "pino";
import type { DaemonConfig } from "../../src/daemon.ts";
import { startRouter, type TestRouter } from "./router.ts";

export interface LoggedRouter extends TestRouter {
  /** Log records at warn level or above so far (parsed pino lines). */
  readonly logs: Record<string, unknown>[];
}

/** Like startRouter, but logging warnings and errors into `logs`. */
export async function startLoggedRouter(config: Partial<DaemonConfig> = {}): Promise<LoggedRouter> {
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: "warn" }, { write: (s: string) => void logs.push(JSON.parse(s)) });
  return Object.assign(await startRouter(config, log), { logs });
}
