/**
 * `node --import tsx bench/profile.ts [--path stdout|stdin|exec] [--mib N] [--count N]
 *  [--top N] [--serve="FLAGS"]`:
 * CPU profiles of one byte path. stdout (default): streams N MiB (default
 * 1024) of `head -c … /dev/zero` from a router subprocess run with
 * `--cpu-prof` to this process's client (profiled with the inspector).
 * stdin: writes N MiB (default 256) into `cat` in 16 MiB TaskExecStdinWrite
 * calls. exec: N (--count, default 1000) concurrent `echo hello` execs
 * (start → read → wait). Prints where each side spent its CPU time, by area of code and by
 * function, plus the router's and client's CPU seconds. The .cpuprofile
 * files are kept (path printed) for Chrome DevTools.
 */
import { mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import { Session } from "node:inspector/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { cleanup } from "./lib/cleanup.ts";
import {
  busyIdle,
  byArea,
  byFunction,
  type CpuProfile,
  type SelfTime,
  window,
} from "./lib/cpuprofile.ts";
import { oursFirstByte, oursRead, oursWrite } from "./lib/ours.ts";
import { renderTable } from "./lib/report.ts";
import { startRouterProc } from "./lib/router.ts";
import { fmtMs, fmtRate } from "./lib/stats.ts";

const { values } = parseArgs({
  options: {
    path: { type: "string", default: "stdout" },
    mib: { type: "string" },
    count: { type: "string", default: "1000" },
    top: { type: "string", default: "15" },
    /** Extra `serve` flags, e.g. "--memory-limit 2GiB" (to see what spilling costs). */
    serve: { type: "string", default: "" },
  },
});
const upload = values.path === "upload";
const stdin = values.path === "stdin" || upload;
const execs = values.path === "exec";
if (!stdin && !execs && values.path !== "stdout") {
  throw new Error("--path takes stdout, stdin, upload or exec");
}
const count = Number(values.count);
const bytes = Math.round(Number(values.mib ?? (stdin ? 256 : 1024)) * 2 ** 20);
const chunk = Buffer.alloc(16 * 2 ** 20, "x");
const top = Number(values.top);

function table(title: string, rows: SelfTime[]): string {
  return `${title}\n\n${renderTable({
    header: ["self time", "share", "where"],
    rows: rows.slice(0, top).map((r) => [fmtMs(r.ms), `${(100 * r.share).toFixed(1)}%`, r.name]),
  })}\n`;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "taskrouter-profile-"));
  const r = await startRouterProc({
    nodeArgs: ["--cpu-prof", "--cpu-prof-dir", dir],
    serveArgs: values.serve.split(" ").filter(Boolean),
  });
  const task = (await r.tasks.create("profile", { runtime: "host" })).taskId;
  const cmd = (n: number) => ["head", "-c", String(n), "/dev/zero"];
  const burst = async (n: number) => {
    const one = () => oursFirstByte(r.client, task, ["echo", "hello"], "hello\n");
    await Promise.all(Array.from({ length: n }, one));
  };
  const once = (n: number) =>
    execs
      ? burst(n)
      : upload
        ? oursWrite(r.client, task, ["cat"], n, chunk, "stream")
        : stdin
          ? oursWrite(r.client, task, ["cat"], n, chunk)
          : oursRead(r.client, task, cmd(n), n);
  await once(execs ? 50 : 64 * 2 ** 20); // warm-up

  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.start");
  const before = await r.stats();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const from = Number(process.hrtime.bigint() / 1000n);
  await once(execs ? count : bytes);
  const to = Number(process.hrtime.bigint() / 1000n);
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const after = await r.stats();
  const { profile } = (await session.post("Profiler.stop")) as { profile: CpuProfile };
  session.disconnect();
  const clientFile = join(dir, "client.cpuprofile");
  await writeFile(clientFile, JSON.stringify(profile));
  await r.stop(); // SIGTERM: the router exits and writes its profile
  const routerFile = (await readdir(dir)).find((f) => f.startsWith("CPU."));
  if (!routerFile) throw new Error(`the router wrote no profile into ${dir}`);
  // Only the samples taken during the transfer (not the router's start-up).
  const routerProfile = window(
    JSON.parse(await readFile(join(dir, routerFile), "utf8")) as CpuProfile,
    from,
    to,
  );

  const out = [
    execs
      ? `exec: ${count} concurrent \`echo hello\` (start → read → wait) in ${fmtMs(ms)} (${((count * 1000) / ms).toFixed(0)} execs/s).`
      : `${values.path}: ${bytes / 2 ** 20} MiB in ${fmtMs(ms)} (${fmtRate((bytes * 1000) / ms)}).`,
    `Router CPU during the transfer: ${fmtMs(after.cpuMs - before.cpuMs)} (user ${fmtMs(after.userMs - before.userMs)}, system ${fmtMs(after.sysMs - before.sysMs)}; all threads).`,
    `Client CPU: ${fmtMs((cpu.user + cpu.system) / 1000)} (user ${fmtMs(cpu.user / 1000)}, system ${fmtMs(cpu.system / 1000)}).`,
    "Profiles below: main thread only, samples taken during the transfer; shares exclude idle.",
    `Router main thread: busy ${fmtMs(busyIdle(routerProfile).busyMs)}, idle ${fmtMs(busyIdle(routerProfile).idleMs)}; client main thread: busy ${fmtMs(busyIdle(profile).busyMs)}, idle ${fmtMs(busyIdle(profile).idleMs)}.`,
    "",
    table("Router, by area", byArea(routerProfile)),
    table("Router, by function", byFunction(routerProfile)),
    table("Client, by area", byArea(profile)),
    table("Client, by function", byFunction(profile)),
    `Profiles: ${join(dir, routerFile)}, ${clientFile}`,
  ];
  process.stdout.write(`${out.join("\n")}\n`);
}

let code = 0;
try {
  await main();
} catch (err) {
  process.stderr.write(`profile: ${err instanceof Error ? err.stack : String(err)}\n`);
  code = 1;
} finally {
  await cleanup.run();
}
process.exit(code);
