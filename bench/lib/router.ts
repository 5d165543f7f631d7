import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { TasksClient } from "../../src/client/admin.ts";
import { RouterClient } from "../../src/client/client.ts";
import { cleanup, killAll } from "./cleanup.ts";
import { mountsUnder, unmountUnder } from "./mounts.ts";
import { runcPath } from "./runc.ts";
import { run } from "./spawn.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const BIN = join(ROOT, "bin/taskrouter.js");

export interface RouterProc {
  address: string;
  /** The router's data dir (a host task's image calls must stay in `tasks/<id>/`). */
  dataDir: string;
  pid: number;
  client: RouterClient;
  tasks: TasksClient;
  /** A new client on a connection of its own (same token); the caller closes it. */
  connect(): RouterClient;
  /** Peak RSS (VmHWM) and CPU time (utime+stime) of the router process. */
  stats(): Promise<ProcStats>;
  /** Resets the peak RSS (VmHWM) to the current RSS. */
  resetPeak(): Promise<void>;
  /** SIGTERM (the router kills its execs and exits), SIGKILL after a grace; removes the data dir. */
  stop(): Promise<void>;
}

export interface ProcStats {
  peakRssBytes: number;
  /** utime + stime. */
  cpuMs: number;
  userMs: number;
  sysMs: number;
}

export interface RouterOptions {
  /** `serve --runtime NAME` (only passed when the CLI has the option). */
  runtime?: string;
  /** Extra node flags, e.g. --cpu-prof. */
  nodeArgs?: string[];
  /** Extra `serve` flags. */
  serveArgs?: string[];
}

let serveHelp: string | undefined;

/** `serve --help` of this checkout (to detect options that other issues add). */
export function serveUsage(): string {
  serveHelp ??= execFileSync(process.execPath, [BIN, "serve", "--help"], {
    encoding: "utf8",
    timeout: 30_000,
  });
  return serveHelp;
}

const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

export async function procStats(pid: number): Promise<ProcStats> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const hwm = /^VmHWM:\s+(\d+) kB/m.exec(status);
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the ")".
  const userMs = (Number(f[11]) * 1000) / CLK_TCK;
  const sysMs = (Number(f[12]) * 1000) / CLK_TCK;
  return { peakRssBytes: Number(hwm?.[1] ?? 0) * 1024, cpuMs: userMs + sysMs, userMs, sysMs };
}

/**
 * Starts `node bin/taskrouter.js serve` as a subprocess on 127.0.0.1:0 with a
 * fresh data dir, and a client connected to it. The output cap is raised so a
 * 1 GiB stream fits; everything else is the router's default.
 */
export async function startRouterProc(opts: RouterOptions = {}): Promise<RouterProc> {
  const dataDir = await mkdtemp(join(tmpdir(), "taskrouter-bench-"));
  const removeDir = cleanup.add(`router data dir ${dataDir}`, () => removeDataDir(dataDir));
  const args = [
    ...(opts.nodeArgs ?? []),
    BIN,
    "serve",
    "--listen",
    "127.0.0.1:0",
    "--data-dir",
    dataDir,
    "--log-level",
    "warn",
    "--output-cap",
    "4GiB",
    ...(opts.runtime ? ["--runtime", opts.runtime] : []),
    ...(opts.serveArgs ?? []),
  ];
  const child = cleanup.child(
    spawn(process.execPath, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] }),
  );
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-4000);
  });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const address = await new Promise<string>((resolveAddr, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`router did not start: ${stderr}`)), 60_000);
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString();
      const m = /listening on (\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolveAddr(m[1] as string);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`router exited (${code}) at start: ${stderr.trim().slice(-500)}`));
    });
  }).catch(async (err: unknown) => {
    await killAll(child.pid ? [child.pid] : []);
    await removeDir();
    throw err;
  });
  child.stdout.resume();
  const pid = child.pid as number;
  const token = await adminToken(dataDir).catch(async (err: unknown) => {
    await killAll([pid]);
    await removeDir();
    throw err;
  });
  const client = new RouterClient(address, token ? { token } : {});
  const tasks = new TasksClient(client);
  const stop = cleanup.add(`router pid ${pid}`, async () => {
    // Tasks (runc containers) outlive the router by design: remove them first.
    const list = await tasks.list().catch(() => []);
    for (const t of list) await tasks.terminate(t.taskId).catch(() => {});
    client.close();
    await killAll([pid], 10_000);
    await exited;
    await removeDir();
  });
  return {
    address,
    dataDir,
    pid,
    client,
    tasks,
    connect: () => new RouterClient(address, token ? { token } : {}),
    stats: () => procStats(pid),
    resetPeak: () => writeFile(`/proc/${pid}/clear_refs`, "5"),
    stop,
  };
}

/**
 * An admin token minted with the router's own key (`token issue --admin`)
 * when the router checks tokens (it has `--auth`, default jwt); undefined for
 * a checkout without auth. The bench measures the default: every call carries
 * a token that the router verifies.
 */
async function adminToken(dataDir: string): Promise<string | undefined> {
  if (!/--auth\b/.test(serveUsage())) return undefined;
  const out = await run([
    process.execPath,
    BIN,
    "token",
    "issue",
    "--admin",
    "--ttl",
    "1d",
    "--data-dir",
    dataDir,
  ]);
  return out.trim();
}

/**
 * Removes a router's data dir: first any container left in its runc state
 * (by id, with `runc delete --force`), then every mount under it (so the
 * removal never crosses into a task's root filesystem), then the files.
 */
async function removeDataDir(dataDir: string): Promise<void> {
  const state = join(dataDir, "runc", "state");
  const runc = runcPath();
  if (runc && existsSync(state)) {
    const ids = await run([runc, "--root", state, "list", "-q"]).catch(() => "");
    for (const id of ids.split("\n").filter(Boolean)) {
      await run([runc, "--root", state, "delete", "--force", id]).catch(() => {});
    }
  }
  await unmountUnder(dataDir);
  const left = await mountsUnder(dataDir);
  if (left.length > 0) {
    process.stderr.write(`bench: not removing ${dataDir}: still mounted: ${left.join(", ")}\n`);
    return;
  }
  await rm(dataDir, { recursive: true, force: true });
}
