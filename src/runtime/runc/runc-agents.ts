import { existsSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startAgentProcess } from "../agent/launch.ts";
import { TaskAgent } from "../agent/task-agent.ts";
import { HOST_PATH } from "../host/host-runtime.ts";
import { nativeHelper } from "../native.ts";
import type { AdoptedProc, Proc, SpawnSpec } from "../runtime.ts";
import type { OciCli } from "./oci-cli.ts";
import { taskProcess } from "./oci-spec.ts";

/** Where the agent binary appears inside a task (bind-mounted read-only, task-config.ts). */
export const AGENT_IN_TASK = "/.taskrouter/agent";

/** What the agents need of the runc runtime, per task. */
export interface RuncAgentHost {
  cli: OciCli;
  /** The task's OCI bundle directory. */
  bundle(taskId: string): string;
  containerId(taskId: string): string;
  /** The pid of the task's init on this machine, while it runs. */
  initPid(taskId: string): number | undefined;
  /** OOM kills counted in the task's cgroup so far. */
  oomKills(taskId: string): number | undefined;
  /** The agent keeps CAP_SYS_PTRACE for `runtime_debug` execs (`serve --allow-runtime-debug`). */
  runtimeDebug: boolean;
}

/**
 * The agents of runc tasks: one per task (native/task-agent.c), started in
 * the container with `<runtime> exec --preserve-fds 1` under
 * native/open-tree.c. Not `--detach`: the agent's first process, a child of
 * `runc exec` on this machine, forks the agent and exits, and `runc exec`
 * reaps it and exits: the agent's parent is then the task's init, and no
 * zombie of the task waits for this machine's init (which may reap seconds
 * late and would hold a dying task until then). A task whose agent binary
 * is not this build's (created before an upgrade) gets `--detach` as before.
 * Its fd 3 is a detached mount of
 * `<bundle>/agent` (the exec directory, never visible in the task) that
 * nothing in the task can walk up from. It has the capabilities of an
 * ordinary exec (plus CAP_SYS_PTRACE, kept only for `runtime_debug` execs,
 * when the router allows those) and the task's seccomp filter.
 *
 * Tasks whose OCI runtime has no `--preserve-fds` (runsc), and tasks a
 * router without agents created (no agent binary in them), have none: their
 * execs go through `<runtime> exec` (see `usable`).
 */
export class RuncAgents {
  private readonly agents = new Map<string, TaskAgent>();

  constructor(private readonly host: RuncAgentHost) {}

  /** Whether task `taskId` can have an agent (its container has the agent binary). */
  usable(taskId: string): boolean {
    if (!this.host.cli.flavor.preserveFds) return false;
    const pid = this.host.initPid(taskId);
    return pid !== undefined && existsSync(`/proc/${pid}/root${AGENT_IN_TASK}`);
  }

  private agent(taskId: string): TaskAgent {
    let a = this.agents.get(taskId);
    if (!a) {
      const dir = join(this.host.bundle(taskId), "agent");
      a = new TaskAgent(dir, () => this.launch(taskId, dir), {
        oomKills: () => this.host.oomKills(taskId),
        debug: this.host.runtimeDebug,
      });
      this.agents.set(taskId, a);
    }
    return a;
  }

  private async launch(taskId: string, dir: string): Promise<void> {
    const debug = this.host.runtimeDebug;
    const processJson = join(this.host.bundle(taskId), "agent.json");
    const proc = taskProcess({
      args: [AGENT_IN_TASK, ...(debug ? ["-d"] : []), "-p"],
      env: { PATH: HOST_PATH },
      cwd: "/",
      extraCaps: debug ? ["CAP_SYS_PTRACE"] : [],
    });
    writeFileSync(processJson, JSON.stringify(proc), { mode: 0o600 });
    const cmd = this.host.cli.command([
      "exec",
      // A task keeps the agent binary it was created with: one built before the agent forked
      // itself would leave `runc exec` waiting beside it for its whole life.
      ...(this.forks(taskId) ? [] : ["--detach"]),
      "--preserve-fds",
      "1",
      "--process",
      processJson,
      this.host.containerId(taskId),
    ]);
    await startAgentProcess(nativeHelper("taskrouter-opentree"), [dir, cmd.file, ...cmd.args], {
      env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin" },
    });
  }

  /** Whether the task's agent binary is this build's (which forks when run by `runc exec`). */
  private forks(taskId: string): boolean {
    const pid = this.host.initPid(taskId);
    const missing = { throwIfNoEntry: false } as const;
    const inTask =
      pid === undefined ? undefined : statSync(`/proc/${pid}/root${AGENT_IN_TASK}`, missing);
    const ours = statSync(nativeHelper("taskrouter-agent"), missing);
    return !!inTask && !!ours && inTask.dev === ours.dev && inTask.ino === ours.ino;
  }

  spawn(taskId: string, spec: SpawnSpec): Promise<Proc> {
    return this.agent(taskId).spawn(spec);
  }

  adopt(taskId: string): Promise<AdoptedProc[]> {
    return this.usable(taskId) ? this.agent(taskId).adopt() : Promise.resolve([]);
  }

  /** Ends the task's agent and its execs (before the container is deleted). */
  async destroy(taskId: string): Promise<void> {
    const a = this.agents.get(taskId);
    this.agents.delete(taskId);
    await a?.quit();
  }

  /** Drops the connections: agents and their execs run on in their containers. */
  close(): void {
    for (const a of this.agents.values()) a.close();
    this.agents.clear();
  }
}
