import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
export const BIN = join(ROOT, "bin", "taskrouter.js");

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** CLI processes still running; `killAll` ends them by pid. */
const children = new Set<ChildProcess>();

/**
 * The CLI's environment: ours without TASKROUTER_* variables, plus `extra`.
 * The CLI runs from the TypeScript source (TASKROUTER_FROM_SOURCE), never
 * from a dist/ that may be older than it.
 */
export function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("TASKROUTER_")) env[k] = v;
  return { ...env, TASKROUTER_FROM_SOURCE: "1", ...extra };
}

/** Starts `node bin/taskrouter.js ARGS` (stdin closed at once). */
export function spawnCli(args: string[], env: NodeJS.ProcessEnv = cliEnv()): ChildProcess {
  // serve defaults to runc containers as root; these tests want host tasks.
  if (args[0] === "serve" && !args.includes("--runtime")) args = [...args, "--runtime", "host"];
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env, stdio: "pipe" });
  children.add(child);
  child.once("exit", () => children.delete(child));
  child.stdin?.end();
  return child;
}

/**
 * A CLI run that has not ended after this long is a hang (a `serve` that should have
 * refused to start, a verb waiting forever): it is SIGKILLed and the run rejects.
 */
const HANG_GUARD_MS = 180_000;

/** Runs the CLI to its end. */
export async function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = cliEnv(),
): Promise<CliResult> {
  const child = spawnCli(args, env);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout?.on("data", (c: Buffer) => out.push(c));
  child.stderr?.on("data", (c: Buffer) => err.push(c));
  let hung = false;
  const guard = setTimeout(() => {
    hung = true;
    child.kill("SIGKILL");
  }, HANG_GUARD_MS);
  let code: number | null;
  try {
    [code] = (await once(child, "close")) as [number | null];
  } finally {
    clearTimeout(guard);
  }
  if (hung) {
    throw new Error(
      `taskrouter ${args.join(" ")} did not end within ${HANG_GUARD_MS / 1000} s (killed): ${Buffer.concat(err).toString().slice(-500)}`,
    );
  }
  return {
    code,
    stdout: Buffer.concat(out).toString(),
    stderr: Buffer.concat(err).toString(),
  };
}

/**
 * Reads a running CLI's stdout (or stderr) until `pattern` matches the text so
 * far; rejects if the process ends first (with what it printed).
 */
export function waitForOutput(
  child: ChildProcess,
  pattern: RegExp,
  from: "stdout" | "stderr" = "stdout",
): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    const stream = from === "stdout" ? child.stdout : child.stderr;
    let text = "";
    const onData = (c: Buffer) => {
      text += c.toString();
      const m = pattern.exec(text);
      if (m) {
        cleanup();
        resolve(m);
      }
    };
    const onClose = (code: number | null) => {
      cleanup();
      reject(new Error(`CLI exited (${code}) before ${pattern} on ${from}: ${text}`));
    };
    const cleanup = () => {
      stream?.off("data", onData);
      child.off("close", onClose);
    };
    stream?.on("data", onData);
    child.once("close", onClose);
  });
}

/** Stops a CLI process (SIGTERM, then SIGKILL after 10 s) by its pid and waits for it. */
export async function stopCli(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const closed = once(child, "close");
  child.kill("SIGTERM");
  const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await closed;
  clearTimeout(t);
}

/** Stops every CLI process still running (test cleanup). */
export async function killAll(): Promise<void> {
  await Promise.all([...children].map(stopCli));
}
