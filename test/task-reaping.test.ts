/**
 * Who reaps what a task leaves behind. native/reaper.c (its protocol: the
 * `exit N` / `signal N` line, orphans reaped, exit once none is left, 125
 * when the program cannot start); runsc tasks start under it and leave no
 * reaper behind once terminated; a runc task's agent is its init's child
 * (native/task-agent.c forks when started from outside the task's pid
 * namespace), so neither waits for this machine's init to reap it.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { readFile, realpath } from "node:fs/promises";
import type { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { nativeHelper } from "../src/runtime/native.ts";
import { waitGone } from "./helpers/procs.ts";
import { processStats, type TestRouter } from "./helpers/router.ts";
import { initPid, RUNSC, runcSkipReason, startRuncRouter } from "./helpers/runc.ts";

const REAPER = nativeHelper("taskrouter-reaper");

/** Runs the reaper on `args`: it, its report (fd 3, resolved at its first line or its end), its stderr. */
function reaper(args: string[]): { child: ChildProcess; line: Promise<string>; err: () => string } {
  const child = spawn(REAPER, args, { stdio: ["ignore", "ignore", "pipe", "pipe"] });
  const report = child.stdio[3] as Readable;
  let out = "";
  let err = "";
  child.stderr?.setEncoding("utf8").on("data", (s: string) => {
    err += s;
  });
  const line = new Promise<string>((resolve) => {
    report.setEncoding("latin1").on("data", (s: string) => {
      out += s;
      if (out.includes("\n")) resolve(out);
    });
    child.once("close", () => resolve(out));
  });
  return { child, line, err: () => err };
}

/** The parent pid of `pid` (field 4 of its stat), or undefined when it is gone. */
async function ppidOf(pid: number): Promise<number | undefined> {
  const ppid = (await processStats()).get(pid)?.[1];
  return ppid === undefined ? undefined : Number(ppid);
}

describe("taskrouter-reaper", () => {
  const children: ChildProcess[] = [];
  const orphans: number[] = [];
  const kill = (pid: number) => {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  };
  after(() => {
    for (const pid of orphans) kill(pid);
    for (const c of children)
      if (c.exitCode === null && c.signalCode === null) kill(c.pid as number);
  });

  it("reports how the program ended, then reaps its orphans and exits 0 once none is left", async () => {
    // The program leaves a sleep behind (its pid on stderr) and exits 3.
    const r = reaper(["/bin/sh", "-c", "sleep 300 & echo $! >&2; exit 3"]);
    children.push(r.child);
    const exited = once(r.child, "exit");
    assert.equal(await r.line, "exit 3\n");
    for (const until = Date.now() + 30_000; !r.err().includes("\n") && Date.now() < until; ) {
      await sleep(10);
    }
    const orphan = Number(r.err().trim());
    assert.ok(orphan > 0, `the orphan's pid: ${JSON.stringify(r.err())}`);
    orphans.push(orphan);
    // Reparented to the reaper, not to this machine's init; the reaper waits while it runs.
    assert.equal(await ppidOf(orphan), r.child.pid);
    assert.equal(r.child.exitCode, null, "the reaper waits while an orphan runs");
    kill(orphan);
    const [code] = await exited;
    assert.equal(code, 0);
    assert.deepEqual(await waitGone([orphan]), [], "the orphan was reaped");
  });

  it("reports a program killed by a signal as `signal N`", async () => {
    const r = reaper(["/bin/sh", "-c", "kill -9 $$"]);
    children.push(r.child);
    const exited = once(r.child, "exit");
    assert.equal(await r.line, "signal 9\n");
    const [code] = await exited;
    assert.equal(code, 0);
  });

  it("exits 125 with a reason, and no report, when the program cannot start", async () => {
    const r = reaper(["/no/such/program"]);
    children.push(r.child);
    const exited = once(r.child, "exit");
    assert.equal(await r.line, ""); // resolved at `close`: stderr is read to its end too
    const [code] = await exited;
    assert.equal(code, 125);
    assert.match(r.err(), /\/no\/such\/program: No such file or directory/);
  });

  it("the program does not get the report's fd", async () => {
    const r = reaper(["/bin/sh", "-c", "[ -e /proc/self/fd/3 ] && echo has-fd-3 >&2; exit 0"]);
    children.push(r.child);
    const closed = once(r.child, "close"); // stderr read to its end
    assert.equal(await r.line, "exit 0\n");
    await closed;
    assert.equal(r.err(), "");
  });
});

/** Live reapers whose command names `dataDir` (runsc's --root is below it). */
async function reapersOf(dataDir: string): Promise<number[]> {
  const exe = await realpath(REAPER);
  const found: number[] = [];
  for (const [pid, [state]] of await processStats()) {
    if (state === "Z") continue;
    const cmd = await readFile(`/proc/${pid}/cmdline`, "latin1").catch(() => "");
    if (cmd.startsWith(`${exe}\0`) && cmd.includes(dataDir)) found.push(pid);
  }
  return found;
}

for (const oci of ["runc", RUNSC]) {
  const skip = await runcSkipReason(oci);
  describe(`task processes are reaped at once (${oci})`, { skip }, () => {
    let r: TestRouter;
    before(async () => {
      r = await startRuncRouter({ ociRuntime: oci });
    });
    after(async () => {
      await r?.close();
    });

    if (oci === RUNSC) {
      it("a runsc task runs under one reaper, and none is left once it is terminated", async () => {
        const task = await r.newTask();
        const reapers = await reapersOf(r.dataDir);
        assert.equal(reapers.length, 1, `reapers ${reapers.join(" ")}`);
        // The sandbox's processes are the reaper's children.
        const children = [...(await processStats())].filter(([, f]) => Number(f[1]) === reapers[0]);
        assert.ok(children.length > 0, "the reaper holds the sandbox's processes");
        await r.tasks.terminate(task);
        assert.deepEqual(await waitGone(reapers), [], "the reaper exited");
      });
    } else {
      it("a runc task's agent is a child of the task's init", async () => {
        const task = await r.newTask();
        const id = await r.client.start(task, ["true"], {});
        assert.deepEqual(await r.client.wait(task, id), { code: 0 });
        const init = await initPid(r, task, oci);
        const stats = await processStats();
        const agents: number[] = [];
        for (const [pid] of stats) {
          const cmd = await readFile(`/proc/${pid}/cmdline`, "latin1").catch(() => "");
          if (cmd.startsWith("/.taskrouter/agent\0")) agents.push(pid);
        }
        const ours = agents.filter((pid) => Number(stats.get(pid)?.[1]) === init);
        assert.equal(ours.length, 1, `agents ${agents.join(" ")}, init ${init}`);
        await r.tasks.terminate(task);
        assert.deepEqual(await waitGone(ours), [], "the agent ended with its task");
      });
    }
  });
}
