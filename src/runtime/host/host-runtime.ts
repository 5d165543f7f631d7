import { type ChildProcess, type StdioOptions, spawn as spawnChild } from "node:child_process";
import { mkdir, rm } from "node:fs/promises";
import { userInfo } from "node:os";
import { isAbsolute, join, normalize } from "node:path";
import { procFromChild } from "../child-proc.ts";
import { FS_TOOLS_IN_TASK, nativeHelper } from "../native.ts";
import { lookupProgram, notStartedProc } from "../program.ts";
import type { Proc, Runtime, SpawnSpec, TaskEnv } from "../runtime.ts";
import { spawnHostPty } from "./host-pty.ts";

export const HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * The `host` runtime: commands run directly on this machine as the router's
 * user, with no isolation. Paths in requests are this machine's own paths.
 * Each task gets a default working directory `<dataDir>/tasks/<id>/work`,
 * which is also its HOME.
 */
export class HostRuntime implements Runtime {
  readonly name = "host";
  readonly warning =
    "the host runtime isolates nothing: commands run on this machine as the router's user";

  constructor(private readonly dataDir: string) {}

  private taskDir(taskId: string): string {
    return join(this.dataDir, "tasks", taskId);
  }

  async prepareTask(taskId: string): Promise<TaskEnv> {
    const work = join(this.taskDir(taskId), "work");
    await mkdir(work, { recursive: true, mode: 0o755 });
    const user = userInfo().username;
    return {
      defaultWorkdir: work,
      baseEnv: { PATH: HOST_PATH, HOME: work, LANG: "C.UTF-8", USER: user, LOGNAME: user },
    };
  }

  async destroyTask(taskId: string): Promise<void> {
    await rm(this.taskDir(taskId), { recursive: true, force: true });
  }

  resolvePath(_taskId: string, path: string): string {
    if (!isAbsolute(path)) throw new Error(`not an absolute path: ${path}`);
    return normalize(path);
  }

  async spawn(_taskId: string, spec: SpawnSpec): Promise<Proc> {
    // The SDKs' filesystem helper has no place on this machine's own filesystem: run ours.
    const s =
      spec.argv[0] === FS_TOOLS_IN_TASK
        ? { ...spec, argv: [nativeHelper("modal-sandbox-fs-tools"), ...spec.argv.slice(1)] }
        : spec;
    if (s.pty) return spawnHostPty(s);
    return spawnHostProcess(s);
  }
}

/** Starts `spec` as the leader of a new session and process group (setsid). */
function spawnHostProcess(spec: SpawnSpec): Proc {
  const merged = spec.stderr === "stdout";
  // Node cannot hand one pipe to both fd 1 and fd 2, so a merged exec runs
  // through `sh`, which points fd 2 at fd 1 and then execs the program
  // (one extra execve, no extra process). Both fds then share one pipe and
  // the kernel keeps the bytes in the order the program wrote them.
  if (merged) {
    // sh would say "exec: NAME: not found": checked first, so the reason reads as unmerged.
    const name = spec.argv[0] ?? "";
    const found = lookupProgram(name, spec.env.PATH ?? "", spec.cwd);
    if (!("file" in found)) return notStartedProc(`${name}: ${found.reason}`, found.code);
  }
  const argv = merged ? ["/bin/sh", "-c", 'exec "$@" 2>&1', "sh", ...spec.argv] : spec.argv;
  const stdio: StdioOptions = ["pipe", spec.stdout, spec.stderr === "pipe" ? "pipe" : "ignore"];
  const child: ChildProcess = spawnChild(argv[0] as string, argv.slice(1), {
    cwd: spec.cwd,
    env: spec.env,
    detached: true,
    stdio,
  });
  return procFromChild(child, {
    stderr: merged ? null : child.stderr,
    startError: (err) => {
      const name = spec.argv[0] ?? "";
      if (err.code === "EACCES") return { message: `${name}: Permission denied`, code: 126 };
      const reason = err.code === "ENOENT" ? "command not found" : err.message;
      return { message: `${name}: ${reason}`, code: 127 };
    },
  });
}
