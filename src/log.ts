import { type Logger, pino } from "pino";

/** The router's logger: JSON lines on stderr (`--log-level` sets the level). */
export function createLogger(level = "info"): Logger {
  return pino({ level, base: { pid: process.pid } }, pino.destination(2));
}
