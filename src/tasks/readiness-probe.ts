import { connect } from "node:net";
import { InvalidArgumentError } from "../errors.ts";
import { checkMaxBytes, quote } from "../limits.ts";
import type { Task } from "./task.ts";

/**
 * Readiness probes, what they are and how one attempt is made (the loop
 * that repeats them is readiness.ts).
 *
 * Contract:
 * - A probe is `exec:SHELL-CMD` (ready when `sh -c SHELL-CMD` exits 0 inside
 *   the task, started through the task's runtime like any exec, but not kept
 *   in its exec table) or `tcp:PORT` (ready when a TCP connect to
 *   127.0.0.1:PORT succeeds in the task's network namespace).
 * - An attempt is killed, and counts as failed, after ATTEMPT_TIMEOUT_MS or
 *   when its signal aborts; it fails at once while the task's container is
 *   not running. It never rejects.
 */

/** What an attempt checks (see the contract above). */
export type ProbeCheck = { kind: "exec"; command: string } | { kind: "tcp"; port: number };

/** A task's readiness probe: its check, and the pause between two attempts (ms). */
export interface ReadinessProbe {
  check: ProbeCheck;
  intervalMs: number;
}

export const DEFAULT_PROBE_INTERVAL_MS = 250;
const MIN_INTERVAL_MS = 10;
const MAX_INTERVAL_MS = 600_000;
/** An attempt (exec or connect) that has not answered by then failed. */
export const ATTEMPT_TIMEOUT_MS = 10_000;
const MAX_PROBE_BYTES = 4096;

/**
 * The probe of `spec` ("exec:SHELL-CMD" or "tcp:PORT") with `intervalMs`
 * (0: the default); undefined for an empty spec with no interval.
 * InvalidArgument for anything else.
 */
export function parseReadinessProbe(spec: string, intervalMs = 0): ReadinessProbe | undefined {
  if (spec === "") {
    if (intervalMs !== 0) {
      throw new InvalidArgumentError("a readiness interval needs a readiness probe");
    }
    return undefined;
  }
  checkMaxBytes("readiness_probe", spec, MAX_PROBE_BYTES);
  if (!Number.isInteger(intervalMs) || intervalMs < 0) {
    throw new InvalidArgumentError(`readiness interval ${intervalMs} ms is not a whole number`);
  }
  if (intervalMs !== 0 && (intervalMs < MIN_INTERVAL_MS || intervalMs > MAX_INTERVAL_MS)) {
    throw new InvalidArgumentError(
      `readiness interval must be ${MIN_INTERVAL_MS} ms to ${MAX_INTERVAL_MS / 60_000} min, not ${intervalMs} ms`,
    );
  }
  const interval = intervalMs || DEFAULT_PROBE_INTERVAL_MS;
  const colon = spec.indexOf(":");
  const kind = colon < 0 ? spec : spec.slice(0, colon);
  const arg = colon < 0 ? "" : spec.slice(colon + 1);
  if (kind === "exec") {
    if (arg.trim() === "") throw new InvalidArgumentError("readiness probe exec: needs a command");
    return { check: { kind: "exec", command: arg }, intervalMs: interval };
  }
  if (kind === "tcp") {
    const port = /^\d{1,5}$/.test(arg) ? Number(arg) : Number.NaN;
    if (!(port >= 1 && port <= 65535)) {
      throw new InvalidArgumentError(
        `readiness probe tcp: needs a port 1-65535, not ${quote(arg)}`,
      );
    }
    return { check: { kind: "tcp", port }, intervalMs: interval };
  }
  throw new InvalidArgumentError(
    `readiness probe must be exec:SHELL-CMD or tcp:PORT, not ${quote(spec, { ends: true })}`,
  );
}

/** The probe as `--readiness-probe` writes it. */
export function formatProbe(check: ProbeCheck): string {
  return check.kind === "exec" ? `exec:${check.command}` : `tcp:${check.port}`;
}

/** One attempt: true when the probe succeeded. Never rejects. */
export type ProbeAttempt = (signal: AbortSignal) => Promise<boolean>;

/**
 * Connects to 127.0.0.1:$1 from inside the task with the first of bash
 * (/dev/tcp), nc (-z) and python3 the task's root has; exit 127 when none.
 */
const TCP_IN_TASK = [
  'p="$1"',
  'if command -v bash >/dev/null 2>&1; then exec bash -c \'exec 3<>"/dev/tcp/127.0.0.1/$1"\' probe "$p"; fi',
  'if command -v nc >/dev/null 2>&1; then exec nc -z -w 2 127.0.0.1 "$p"; fi',
  'if command -v python3 >/dev/null 2>&1; then exec python3 -c \'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 2)\' "$p"; fi',
  "exit 127",
].join("\n");

/**
 * How `check` is tried in `task`: an exec probe runs `sh -c CMD` in the task;
 * a tcp probe connects from this process when the task shares its network
 * namespace (a runtime that sets no network, or `--network host`), and
 * otherwise from inside the task (TCP_IN_TASK).
 */
export function probeAttempt(task: Task, check: ProbeCheck): ProbeAttempt {
  if (check.kind === "exec")
    return (signal) => runInTask(task, ["sh", "-c", check.command], signal);
  const sharesNetns = !task.runtime.checkSpec || task.spec.network === "host";
  if (sharesNetns) return (signal) => tcpConnect(check.port, signal);
  return (signal) =>
    runInTask(task, ["sh", "-c", TCP_IN_TASK, "probe", String(check.port)], signal);
}

/** Runs `argv` in the task with its base env and default workdir; true when it exits 0. */
async function runInTask(task: Task, argv: string[], signal: AbortSignal): Promise<boolean> {
  if (task.state !== "running" || task.runtimeStatus().state !== "running") return false;
  let proc: Awaited<ReturnType<Task["runtime"]["spawn"]>>;
  try {
    proc = await task.runtime.spawn(task.id, {
      argv,
      env: { ...task.env.baseEnv },
      cwd: task.env.defaultWorkdir,
      stdout: "ignore",
      stderr: "ignore",
      deadline: Date.now() + ATTEMPT_TIMEOUT_MS,
    });
  } catch {
    return false;
  }
  proc.stdin.on("error", () => undefined);
  proc.stdin.end();
  const kill = () => proc.signalGroup("SIGKILL");
  const timer = setTimeout(kill, ATTEMPT_TIMEOUT_MS);
  if (signal.aborted) kill();
  else signal.addEventListener("abort", kill, { once: true });
  try {
    return (await proc.exited).code === 0;
  } finally {
    clearTimeout(timer);
    signal.removeEventListener("abort", kill);
    await proc.release?.().catch(() => undefined);
  }
}

/** A TCP connect to 127.0.0.1:`port` from this process. */
function tcpConnect(port: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: "127.0.0.1", port, timeout: ATTEMPT_TIMEOUT_MS });
    const done = (ok: boolean) => {
      signal.removeEventListener("abort", onAbort);
      sock.destroy();
      resolve(ok);
    };
    const onAbort = () => done(false);
    signal.addEventListener("abort", onAbort, { once: true });
    sock.once("connect", () => done(true));
    sock.once("timeout", () => done(false));
    sock.once("error", () => done(false));
  });
}
