import { type ChildProcess, type StdioOptions, spawn as spawnChild } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { userInfo } from "node:os";
import { isAbsolute, join, normalize } from "node:path";
import { launchHostAgent } from "../agent/launch.ts";
import { TaskAgent } from "../agent/task-agent.ts";
import { procFromChild, procFromSpawned, type StartFailure } from "../child-proc.ts";
import { FS_TOOLS_IN_TASK, nativeHelper } from "../native.ts";
import { lookupProgram, notStartedProc } from "../program.ts";
import type { AdoptedProc, Proc, Runtime, SpawnSpec, TaskEnv } from "../runtime.ts";
import { lazySpawner, SpawnFailed } from "../spawner.ts";
import { spawnHostPty } from "./host-pty.ts";

export const HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * The `host` runtime: commands run directly on this machine as the router's
 * user, with no isolation. Paths in requests are this machine's own paths.
 * Each task gets a default working directory `<dataDir>/tasks/<id>/work`,
 * which is also its HOME. The image calls (mount, unmount, snapshot) of a
 * host task are confined to `<dataDir>/tasks/<id>` (images/task-fs.ts).
 *
 * Every exec starts through the task's agent (native/task-agent.c, started
 * on this machine in a session of its own, exec directory
 * `<dataDir>/tasks/<id>/agent`), so execs outlive a router that dies and the
 * next router adopts them. Without the built helper, execs are the router's
 * children (the spawner, or a fork) and end with it.
 */
export class HostRuntime implements Runtime {
  readonly name = "host";
  readonly warning =
    "the host runtime isolates nothing: commands run on this machine as the router's user";

  /**
   * Starts pipe execs (native/spawner.c: no fork of this large process);
   * absent when the native helpers were not built (then: child_process).
   */
  private readonly spawner: ReturnType<typeof lazySpawner> | undefined;
  /** The agent of each task (absent without the built helper). */
  private readonly agents = new Map<string, TaskAgent>();
  private readonly useAgent: boolean;

  /** `opts.agent: false`: no agents, execs are the router's children (as without the helper). */
  constructor(
    private readonly dataDir: string,
    opts: { agent?: boolean } = {},
  ) {
    this.useAgent = opts.agent !== false && existsSync(nativeHelper("taskrouter-agent"));
    const helper = nativeHelper("taskrouter-spawner");
    this.spawner = existsSync(helper) ? lazySpawner(helper, {}) : undefined;
  }

  private agent(taskId: string): TaskAgent {
    let a = this.agents.get(taskId);
    if (!a) {
      a = new TaskAgent(join(this.taskDir(taskId), "agent"), launchHostAgent, { debug: false });
      this.agents.set(taskId, a);
    }
    return a;
  }

  async adopt(taskId: string): Promise<AdoptedProc[]> {
    return this.useAgent ? this.agent(taskId).adopt() : [];
  }

  private taskDir(taskId: string): string {
    return join(this.dataDir, "tasks", taskId);
  }

  async prepareTask(taskId: string): Promise<TaskEnv> {
    const work = join(this.taskDir(taskId), "work");
    await mkdir(work, { recursive: true, mode: 0o755 });
    this.spawner?.get(); // started now rather than by (and in the time of) the first exec
    const user = userInfo().username;
    return {
      defaultWorkdir: work,
      baseEnv: { PATH: HOST_PATH, HOME: work, LANG: "C.UTF-8", USER: user, LOGNAME: user },
    };
  }

  async destroyTask(taskId: string): Promise<void> {
    await this.agents.get(taskId)?.quit();
    this.agents.delete(taskId);
    await rm(this.taskDir(taskId), { recursive: true, force: true });
  }

  resolvePath(_taskId: string, path: string): string {
    if (!isAbsolute(path)) throw new Error(`not an absolute path: ${path}`);
    return normalize(path);
  }

  async spawn(taskId: string, spec: SpawnSpec): Promise<Proc> {
    // The SDKs' filesystem helper has no place on this machine's own filesystem: run ours.
    const s =
      spec.argv[0] === FS_TOOLS_IN_TASK
        ? { ...spec, argv: [nativeHelper("modal-sandbox-fs-tools"), ...spec.argv.slice(1)] }
        : spec;
    if (this.useAgent) return this.agent(taskId).spawn(s);
    if (s.pty) return spawnHostPty(s);
    // Looked up here, as a shell would, so a program that cannot start reads the same either way.
    const name = s.argv[0] ?? "";
    const found = lookupProgram(name, s.env.PATH ?? "", s.cwd);
    if (!("file" in found)) return notStartedProc(`${name}: ${found.reason}`, found.code);
    if (this.spawner) {
      try {
        const p = await this.spawner.get().spawn(found.file, s.argv.slice(1), {
          argv0: name,
          env: s.env,
          cwd: s.cwd,
          stdout: s.stdout,
          stderr: s.stderr,
        });
        return procFromSpawned(p);
      } catch (err) {
        if (err instanceof SpawnFailed) {
          const f = startFailure(name, err.code, err.message);
          return notStartedProc(f.message, f.code);
        }
        // The helper is gone (the next exec starts a new one) or the request is too
        // large for it: this exec forks the router.
      }
    }
    return spawnHostProcess(s);
  }

  /**
   * Ends the spawner and the tasks' agents (the router stops: its execs were
   * ended by then; a router that dies instead leaves them to the next one).
   */
  async close(): Promise<void> {
    this.spawner?.close();
    const agents = [...this.agents.values()];
    this.agents.clear();
    await Promise.all(agents.map((a) => a.quit()));
  }
}

/** How a program that could not be started is reported (errno `code`), as a shell would. */
function startFailure(name: string, code: string | undefined, message: string): StartFailure {
  if (code === "EACCES") return { message: `${name}: Permission denied`, code: 126 };
  const reason = code === "ENOENT" ? "command not found" : message;
  return { message: `${name}: ${reason}`, code: 127 };
}

/**
 * Starts `spec` with a fork of the router (child_process) as the leader of a
 * new session and process group (setsid): without the spawner only.
 */
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
    startError: (err) => startFailure(spec.argv[0] ?? "", err.code, err.message),
  });
}
