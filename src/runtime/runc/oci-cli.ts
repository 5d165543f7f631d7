import { execFile, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { readFile } from "node:fs/promises";
import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { hybridWithV2Controllers } from "../../linux/cgroup.ts";
import { procStart } from "../../linux/proc.ts";
import { nativeHelper } from "../native.ts";
import { lookupProgram } from "../program.ts";
import { hidingV2Controllers } from "./cgroup.ts";
import { OCI_FLAVORS, type OciFlavor, ociFlavor } from "./flavors.ts";

const run = promisify(execFile);

/** How long deleteForce waits for a killed init to die before deleting anyway (a guard). */
const INIT_DEATH_WAIT_MS = 10_000;

/** The state of a container as `runc state` reports it. */
export interface ContainerState {
  status: "creating" | "created" | "running" | "paused" | "stopped";
  /** Host pid of the container's init (0 when stopped). */
  pid: number;
}

/**
 * The OCI runtime command line (`runc`, or any runtime with the same CLI:
 * `crun`, `runsc`). All state lives under `root` (the runtime's `--root`), so
 * routers with different data dirs never see each other's containers.
 */
export class OciCli {
  constructor(
    /** Path or name of the runtime binary. */
    readonly binary: string,
    /** The runtime's state directory (`--root`). */
    readonly root: string,
    /** What the runtime can do (./flavors.ts). */
    readonly flavor: OciFlavor = OCI_FLAVORS.runc,
    /** The command that runs the binary (default: the binary itself; see cgroup.ts). */
    private readonly prefix: string[] = [binary],
  ) {}

  /**
   * The command line of the OCI runtime `binary` with state under `root`:
   * its flavour from its `--version`, the program found in PATH once (each
   * exec then starts without a failed execve per PATH entry before it), run
   * with hybrid cgroup2 controllers hidden where the flavour needs it, and
   * the flavour's global flags.
   */
  static async open(binary: string, root: string): Promise<OciCli> {
    const flavor = await ociFlavor(binary);
    const [file = binary, ...args] =
      flavor.refusesHybridV2Controllers && hybridWithV2Controllers()
        ? hidingV2Controllers(binary)
        : [binary];
    const found = lookupProgram(file, process.env.PATH ?? "");
    const prefix = ["file" in found ? found.file : file, ...args, ...flavor.globalFlags];
    return new OciCli(binary, root, flavor, prefix);
  }

  /** The program and arguments that run the runtime with `args` (after the global flags). */
  command(args: string[]): { file: string; args: string[] } {
    const [file = this.binary, ...rest] = this.prefix;
    return { file, args: [...rest, ...this.globalArgs(), ...args] };
  }

  /** Arguments that start every call (global flags). */
  private globalArgs(): string[] {
    return ["--root", this.root];
  }

  private async call(args: string[]): Promise<string> {
    const cmd = this.command(args);
    const { stdout } = await run(cmd.file, cmd.args, {
      maxBuffer: 4 * 1024 * 1024,
    });
    return stdout;
  }

  /** The container's state, or undefined when the runtime does not know it. */
  async state(id: string): Promise<ContainerState | undefined> {
    try {
      const s = JSON.parse(await this.call(["state", id])) as Partial<ContainerState>;
      return { status: s.status ?? "stopped", pid: s.pid ?? 0 };
    } catch (err) {
      const stderr = String((err as { stderr?: unknown }).stderr ?? "");
      // runc: "container does not exist"; crun: "error opening file `ROOT/ID/status`: No such file or directory".
      if (/does not exist|not exist|not found|no such file or directory/i.test(stderr)) {
        return undefined;
      }
      throw new Error(`${this.binary} state ${id} failed: ${stderr.trim() || String(err)}`);
    }
  }

  /**
   * Creates and starts the container of `bundle` detached (`run -d`). The
   * container's init gets /dev/null for stdin/stdout and `logFile` for stderr
   * (which also receives the runtime's own errors): nothing ties it to the router.
   */
  async runDetached(
    id: string,
    bundle: string,
    logFile: string,
    network: "none" | "host",
  ): Promise<void> {
    const failed = await this.startDetached(
      [...this.flavor.runFlags(network), "run", "--detach", "--bundle", bundle, id],
      logFile,
    );
    if (failed) throw new Error(`${this.binary} run ${id} failed (${failed})`);
  }

  /**
   * Runs the runtime with `args` (a `run`/`restore --detach`): stdin and
   * stdout /dev/null, stderr appended to `logFile`. Undefined once it exited
   * 0; else "exit N: " and the log's last three lines. With
   * `flavor.reapedByHelper` it runs under native/reaper.c (in a session of
   * its own, left running: it reaps what the command leaves behind).
   */
  async startDetached(args: string[], logFile: string): Promise<string | undefined> {
    const fd = openSync(logFile, "a", 0o600);
    try {
      const cmd = this.command(args);
      const code = this.flavor.reapedByHelper
        ? await underReaper(cmd, fd)
        : await new Promise<number>((resolve) => {
            const child = spawn(cmd.file, cmd.args, { stdio: ["ignore", "ignore", fd] });
            child.once("error", () => resolve(-1));
            child.once("exit", (c) => resolve(c ?? -1));
          });
      if (code === 0) return undefined;
      const log = await readFile(logFile, "utf8").catch(() => "");
      return `exit ${code}: ${log.trim().split("\n").slice(-3).join(" | ")}`;
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Kills every process of the container and deletes it; fine when it does
   * not exist. `initPid`: the container's init while it runs (when known).
   * With `flavor.deleteAwaitsReap` that init is SIGKILLed first (its pid
   * namespace takes every other process of the container along) and the
   * delete comes once it has died, so the runtime finds the container
   * stopped and does not wait for the machine's init to reap it.
   */
  async deleteForce(id: string, initPid?: number): Promise<void> {
    if (initPid !== undefined && this.flavor.deleteAwaitsReap) await this.killInit(id, initPid);
    try {
      await this.call(["delete", "--force", id]);
    } catch (err) {
      if ((await this.state(id).catch(() => undefined)) === undefined) return;
      const stderr = String((err as { stderr?: unknown }).stderr ?? "").trim();
      throw new Error(`${this.binary} delete ${id} failed: ${stderr || String(err)}`);
    }
  }

  /** SIGKILLs the container's init `pid` (`kill`) and waits, bounded, until it has died. */
  private async killInit(id: string, pid: number): Promise<void> {
    const start = procStart(pid);
    if (start === undefined) return; // died already
    try {
      await this.call(["kill", id, "KILL"]);
    } catch {
      return; // stopped or gone meanwhile: the delete sorts it out
    }
    for (const until = Date.now() + INIT_DEATH_WAIT_MS; Date.now() < until; ) {
      if (procStart(pid) !== start) return; // a zombie, or reaped
      await sleep(5);
    }
  }

  /**
   * Arguments of `exec` for one process (after the global ones). `pidFile`
   * receives the pid of the process: its host pid, or its pid inside the
   * task (`flavor.killsInTask`: the host cannot see it). A terminal is
   * `--tty`, or `--console-socket` (`flavor.consoleSocketPty`).
   */
  execArgs(
    id: string,
    p: { processJson: string; pidFile: string; tty: boolean; consoleSocket: string },
  ): string[] {
    const f = this.flavor;
    const a = ["exec", "--process", p.processJson];
    a.push(f.killsInTask ? "--internal-pid-file" : "--pid-file", p.pidFile);
    if (f.preserveFds) a.push("--preserve-fds", "1");
    if (p.tty) a.push(...(f.consoleSocketPty ? ["--console-socket", p.consoleSocket] : ["--tty"]));
    a.push(id);
    return a;
  }
}

/**
 * Runs `cmd` under native/reaper.c (stdin and stdout /dev/null, stderr
 * `errFd`) and resolves to its exit code (-1: killed, or not started) from
 * the reaper's report on its fd 3; the reaper is left running.
 */
function underReaper(cmd: { file: string; args: string[] }, errFd: number): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(nativeHelper("taskrouter-reaper"), [cmd.file, ...cmd.args], {
      stdio: ["ignore", "ignore", errFd, "pipe"],
      detached: true,
    });
    const report = child.stdio[3] as Readable | null;
    let out = "";
    let settled = false;
    const done = (code: number) => {
      if (settled) return;
      settled = true;
      report?.destroy();
      child.unref();
      resolve(code);
    };
    child.once("error", () => done(-1));
    report?.setEncoding("latin1");
    report?.on("data", (s: string) => {
      out += s;
      const m = /^(exit|signal) (\d+)\n/.exec(out);
      if (m) done(m[1] === "exit" ? Number(m[2]) : -1);
    });
    // Ended (its report read to the end) with no line: it could not start the command
    // (its reason is in the log).
    child.once("close", (c) => done(c === 0 ? -1 : (c ?? -1)));
  });
}

/** Why `binary` cannot run containers here, or undefined when it can. */
export async function probeOciRuntime(binary: string): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return "not running as root";
  try {
    await run(binary, ["--version"]);
  } catch (err) {
    return `${binary} --version failed: ${(err as Error).message.split("\n")[0]}`;
  }
  return undefined;
}
