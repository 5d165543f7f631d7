import { spawn, spawnSync } from "node:child_process";
import { mkdir, open, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { TASK_SECCOMP_CAPS } from "../../src/runtime/runc/runc-runtime.ts";
import { defaultSeccomp, hostTarget } from "../../src/runtime/runc/seccomp.ts";
import { cleanup } from "./cleanup.ts";
import { run } from "./spawn.ts";
import type { Availability } from "./sshd.ts";

/** A bare runc container of our own, the baseline for execs into a container. */
export interface BareRunc {
  /** argv of `runc exec` running `cmd` in the container. */
  argv(cmd: string[]): string[];
  version: string;
}

/**
 * Runs `runc run -d`, whose container keeps the stdio it was given: so
 * stdin/stdout are /dev/null and stderr a log file (pipes would never close),
 * and we wait for runc's exit, not for its pipes.
 */
async function runDetached(argv: string[], logPath: string): Promise<number> {
  const log = await open(logPath, "w");
  try {
    const child = cleanup.child(
      spawn(argv[0] as string, argv.slice(1), { stdio: ["ignore", "ignore", log.fd] }),
    );
    return await new Promise<number>((resolve, reject) => {
      child.once("error", reject);
      child.once("exit", (c) => resolve(c ?? 1));
    });
  } finally {
    await log.close();
  }
}

/** The runc binary on PATH, or undefined. */
export function runcPath(): string | undefined {
  const r = spawnSync("sh", ["-c", "command -v runc"], { encoding: "utf8" });
  const p = r.stdout.trim();
  return r.status === 0 && p ? p : undefined;
}

/**
 * Creates and starts (`runc run -d`) a container whose root is an empty
 * read-only dir with this machine's /usr and /etc bind-mounted read-only
 * (so it has the same tools), a tmpfs /tmp, and `sleep infinity` as pid 1.
 * State lives in its own `--root` so nothing else's runc state is touched;
 * `runc delete -f` removes it at cleanup.
 */
export async function startBareRunc(dir: string): Promise<Availability<BareRunc>> {
  const runc = runcPath();
  if (!runc) return { ok: false, reason: "runc not installed" };
  if (process.getuid?.() !== 0) return { ok: false, reason: "runc needs root" };
  const bundle = join(dir, "bundle");
  const state = join(dir, "state");
  const rootfs = join(bundle, "rootfs");
  await mkdir(state, { recursive: true, mode: 0o700 });
  for (const d of ["usr", "etc", "tmp", "proc", "dev", "sys"]) {
    await mkdir(join(rootfs, d), { recursive: true });
  }
  for (const l of ["bin", "sbin", "lib", "lib64"]) await symlink(`usr/${l}`, join(rootfs, l));
  await run([runc, "spec", "--bundle", bundle]);
  const config = JSON.parse(await readFile(join(bundle, "config.json"), "utf8"));
  config.process.terminal = false;
  config.process.args = ["sleep", "infinity"];
  config.hostname = "bench";
  // The same seccomp filter as our tasks (runc compiles it at every exec): equal work.
  config.linux.seccomp = defaultSeccomp(hostTarget(TASK_SECCOMP_CAPS));
  for (const d of ["usr", "etc"]) {
    config.mounts.push({
      destination: `/${d}`,
      type: "bind",
      source: `/${d}`,
      options: ["rbind", "ro"],
    });
  }
  config.mounts.push({
    destination: "/tmp",
    type: "tmpfs",
    source: "tmpfs",
    options: ["nosuid", "nodev"],
  });
  await writeFile(join(bundle, "config.json"), JSON.stringify(config, null, 2));
  const id = `taskrouter-bench-${process.pid}`;
  const base = [runc, "--root", state];
  // Registered before the start, so an interrupted start is cleaned up too.
  const remove = cleanup.add(`runc container ${id}`, async () => {
    await run([...base, "delete", "--force", id]).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  });
  const code = await runDetached(
    [...base, "run", "-d", "--bundle", bundle, id],
    join(dir, "run.log"),
  );
  if (code !== 0) {
    const log = await readFile(join(dir, "run.log"), "utf8").catch(() => "");
    await remove();
    return { ok: false, reason: `runc run exited ${code}: ${log.trim().slice(0, 300)}` };
  }
  const version = (await run([runc, "--version"])).split("\n")[0] ?? "runc";
  return { ok: true, value: { argv: (cmd) => [...base, "exec", id, ...cmd], version } };
}
