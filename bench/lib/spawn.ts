import { spawn } from "node:child_process";
import { performance } from "node:perf_hooks";
import { cleanup } from "./cleanup.ts";

/**
 * Baselines that run a command as a plain child of this process: raw
 * `child_process.spawn`, and (with an argv prefix) `ssh host CMD` or
 * `runc exec ID CMD`. Every function checks the command's result, so a
 * broken baseline fails loudly instead of reporting a fast time.
 */

function start(argv: string[], stdio: ("pipe" | "ignore")[]) {
  const child = spawn(argv[0] as string, argv.slice(1), { stdio: stdio as never });
  cleanup.child(child);
  // A command that exits without reading its stdin makes our writes fail (EPIPE): not an error here.
  child.stdin?.on("error", () => {});
  const closed = new Promise<number>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, sig) => resolve(code ?? 128 + (sig ? 1 : 0)));
  });
  return { child, closed };
}

async function expectExit(argv: string[], closed: Promise<number>, stderr: Buffer[]) {
  const code = await closed;
  if (code !== 0) {
    const msg = Buffer.concat(stderr).toString().trim().slice(0, 300);
    throw new Error(`${argv.join(" ")} exited ${code}${msg ? `: ${msg}` : ""}`);
  }
}

function collect(s: NodeJS.ReadableStream | null): Buffer[] {
  const parts: Buffer[] = [];
  s?.on("data", (c: Buffer) => parts.push(c));
  return parts;
}

/** Spawn → close, with stdin, stdout and stderr piped (as the router does); ms. */
export async function timeExit(argv: string[]): Promise<number> {
  const t0 = performance.now();
  const { child, closed } = start(argv, ["pipe", "pipe", "pipe"]);
  child.stdin?.end();
  child.stdout?.resume();
  const err = collect(child.stderr);
  await expectExit(argv, closed, err);
  return performance.now() - t0;
}

/** Spawn → first stdout byte (checked against `expect` at close); ms. */
export async function timeFirstByte(argv: string[], expect: string): Promise<number> {
  const t0 = performance.now();
  const { child, closed } = start(argv, ["pipe", "pipe", "pipe"]);
  child.stdin?.end();
  let first = Number.NaN;
  const out: Buffer[] = [];
  child.stdout?.on("data", (c: Buffer) => {
    if (out.length === 0) first = performance.now() - t0;
    out.push(c);
  });
  const err = collect(child.stderr);
  await expectExit(argv, closed, err);
  const got = Buffer.concat(out).toString();
  if (got !== expect) throw new Error(`${argv.join(" ")} printed ${JSON.stringify(got)}`);
  return first;
}

/** Spawn → stdout read to EOF by Node ('data' events) → close; checks the byte count; ms. */
export async function timeRead(argv: string[], bytes: number): Promise<number> {
  const t0 = performance.now();
  const { child, closed } = start(argv, ["ignore", "pipe", "pipe"]);
  let n = 0;
  child.stdout?.on("data", (c: Buffer) => {
    n += c.length;
  });
  const err = collect(child.stderr);
  await expectExit(argv, closed, err);
  if (n !== bytes) throw new Error(`${argv.join(" ")}: read ${n} bytes, expected ${bytes}`);
  return performance.now() - t0;
}

/** Spawn → `bytes` written to stdin in `chunk`-sized writes (each awaited), EOF → close; ms. */
export async function timeWrite(argv: string[], bytes: number, chunk: Buffer): Promise<number> {
  const t0 = performance.now();
  const { child, closed } = start(argv, ["pipe", "ignore", "pipe"]);
  const err = collect(child.stderr);
  const stdin = child.stdin;
  if (!stdin) throw new Error("no stdin pipe");
  for (let off = 0; off < bytes; off += chunk.length) {
    const part = off + chunk.length <= bytes ? chunk : chunk.subarray(0, bytes - off);
    await new Promise<void>((resolve) => stdin.write(part, () => resolve()));
  }
  stdin.end();
  await expectExit(argv, closed, err);
  return performance.now() - t0;
}

/** Runs a command to completion and returns its stdout; throws on a non-zero exit. */
export async function run(argv: string[], input?: string): Promise<string> {
  const { child, closed } = start(argv, ["pipe", "pipe", "pipe"]);
  child.stdin?.end(input ?? "");
  const out = collect(child.stdout);
  const err = collect(child.stderr);
  await expectExit(argv, closed, err);
  return Buffer.concat(out).toString();
}
