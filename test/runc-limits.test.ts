import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { ExecRequest } from "../src/exec/exec-request.ts";
import { TaskState } from "../src/gen/taskrouter/v1/tasks_pb.ts";
import { cgroupDirs } from "../src/runtime/runc/cgroup.ts";
import { mountsUnder } from "../src/runtime/runc/mounts.ts";
import type { RuncRuntime } from "../src/runtime/runc/runc-runtime.ts";
import { killAll, runCli, spawnCli, stopCli, waitForOutput } from "./helpers/cli-run.ts";
import { waitGone } from "./helpers/procs.ts";
import { collect, type TestRouter } from "./helpers/router.ts";
import {
  initPid,
  OCI_RUNTIMES,
  removeDataDir,
  runcSkipReason,
  runIn,
  startRuncRouter,
  tempDataDir,
} from "./helpers/runc.ts";

// runc tasks: limits and OOM, PTY, runtime_debug, a dead container, cleanup, the CLI.
const skip = await runcSkipReason();

// With every OCI runtime CLI (runc; crun when installed).
for (const { label, binary } of OCI_RUNTIMES) {
  const ociSkip = await runcSkipReason(binary);
  describe(`runc runtime: limits, state, cleanup (${label})`, { skip: ociSkip }, () => {
    let r: TestRouter;
    before(async () => {
      r = await startRuncRouter({ allowRuntimeDebug: true, ociRuntime: binary });
    });
    after(() => r?.close());

    // gVisor's sandbox is one host cgroup: the host's OOM killer ends the whole task.
    const sandboxed = label === "runsc";
    it(`a memory limit ends a hog with termination cause oom; ${sandboxed ? "the task stops (oom)" : "the task goes on"}`, async () => {
      const mib = sandboxed ? 128 : 32;
      const t = (await r.tasks.create("", { memoryBytes: mib * 1024 * 1024 })).taskId;
      const res = await runIn(r, t, ["tail", "/dev/zero"]);
      assert.deepEqual(res.status, { signal: 9 });
      assert.equal(r.daemon.tasks.inspectExec(t, res.id).cause, "oom");
      if (sandboxed) {
        const task = await r.tasks.get(t);
        assert.deepEqual([task.state, task.stopReason], [TaskState.STOPPED, "oom"]);
        return;
      }
      const next = await runIn(r, t, ["echo", "alive"]);
      assert.equal(next.stdout, "alive\n");
      const plain = await runIn(r, t, ["sh", "-c", "kill -9 $$"]);
      assert.equal(r.daemon.tasks.inspectExec(t, plain.id).cause, "signaled");
    });

    it("pids_limit is INVALID_ARGUMENT with runsc (its sandbox would die of it)", {
      skip: sandboxed ? undefined : "runsc only",
    }, async () => {
      await assert.rejects(r.tasks.create("", { pidsLimit: 64 }), {
        kind: "InvalidArgument",
        message: /not supported with the runsc/,
      });
    });

    it("cpus and pids limits reach the task's cgroup; the Task message shows them", {
      skip: sandboxed ? "runsc takes no pids_limit" : undefined,
    }, async () => {
      const created = await r.tasks.create("", { cpus: 0.5, pidsLimit: 64 });
      const t = created.taskId;
      assert.equal(created.cpus, 0.5);
      assert.equal(created.pidsLimit, 64);
      assert.equal(created.network, "none");
      const rt = r.daemon.tasks.get(t).runtime as RuncRuntime;
      const dirs = cgroupDirs(rt.cgroupsPath(t));
      const read = (name: string) =>
        dirs.map((d) => join(d, name)).filter((f) => existsSync(f))[0] as string;
      const pidsMax = read("pids.max");
      assert.equal(readFileSync(pidsMax, "utf8").trim(), "64");
      const quota = read("cpu.cfs_quota_us") ?? read("cpu.max");
      assert.match(readFileSync(quota, "utf8"), /^50000\b/);
      const res = await runIn(r, t, [
        "sh",
        "-c",
        "for i in $(seq 80); do sleep 5 & done 2>&1; wait",
      ]);
      assert.match(res.stdout + res.stderr, /fork|resource|Cannot|retry/i);
    });

    it("bad limits are INVALID_ARGUMENT; the host runtime takes none", async () => {
      const before = (await r.tasks.list()).length;
      await assert.rejects(r.tasks.create("", { memoryBytes: 1000 }), { kind: "InvalidArgument" });
      await assert.rejects(r.tasks.create("", { network: "bridge" }), { kind: "InvalidArgument" });
      await assert.rejects(r.tasks.create("", { runtime: "host", pidsLimit: 50 }), {
        kind: "InvalidArgument",
      });
      assert.equal((await r.tasks.list()).length, before, "a refused create made no task");
    });

    it("runtime_debug gives CAP_SYS_PTRACE to that exec only", async () => {
      const t = await r.newTask();
      const capEff = async (debug: boolean) => {
        const req: ExecRequest = {
          execId: `cap-${debug}-${randomBytes(4).toString("hex")}`,
          argv: ["sh", "-c", "grep CapEff /proc/self/status"],
          stdout: "pipe",
          stderr: "pipe",
          timeoutSecs: undefined,
          workdir: undefined,
          envSources: [],
          containerId: "",
          pty: undefined,
          runtimeDebug: debug,
        };
        const e = await r.daemon.tasks.startExec(t, req);
        await e.exited;
        const text = (await collect(e.read("stdout", 0))).toString();
        return BigInt(`0x${text.trim().split(/\s+/)[1]}`);
      };
      const PTRACE = 1n << 19n;
      assert.equal((await capEff(true)) & PTRACE, PTRACE);
      assert.equal((await capEff(false)) & PTRACE, 0n);
    });

    it("a PTY exec gets its size, a terminal, resizes, and its exit status", async () => {
      const t = await r.newTask();
      const id = await r.client.start(
        t,
        [
          "sh",
          "-c",
          'stty size; [ -t 0 ] && [ -t 1 ] && echo tty; trap "stty size; exit 7" WINCH; echo ready; while :; do sleep 0.1; done',
        ],
        { stdout: "pipe", pty: { rows: 30, cols: 100 } },
      );
      let text = "";
      const it = r.client.read(t, id, "stdout")[Symbol.asyncIterator]();
      while (!text.includes("ready")) {
        const n = await it.next();
        assert.ok(!n.done, `output ended early: ${JSON.stringify(text)}`);
        text += n.value.toString();
      }
      r.daemon.tasks.resizeExec(t, id, 40, 120);
      assert.deepEqual(await r.client.wait(t, id), { code: 7 });
      for (let n = await it.next(); !n.done; n = await it.next()) text += n.value.toString();
      assert.equal(text, "30 100\r\ntty\r\nready\r\n40 120\r\n");
    });

    it("a task whose container died is STOPPED; execs in it are FAILED_PRECONDITION", async () => {
      const t = await r.newTask();
      const pid = await initPid(r, t, binary);
      process.kill(pid, "SIGKILL");
      assert.deepEqual(await waitGone([pid]), []);
      const got = await r.tasks.get(t);
      assert.equal(got.state, TaskState.STOPPED);
      assert.equal(got.stopReason, "exited");
      await assert.rejects(r.client.start(t, ["true"]), { kind: "FailedPrecondition" });
      await r.tasks.terminate(t);
    });

    it("task rm leaves no mount, bundle, cgroup, container or process", async () => {
      const t = await r.newTask();
      const rt = r.daemon.tasks.get(t).runtime as RuncRuntime;
      const bundle = join(r.dataDir, "runc", "bundles", t);
      const cg = rt.cgroupsPath(t);
      const pid = await initPid(r, t, binary);
      const bg = await runIn(r, t, ["sh", "-c", "setsid sleep 1000 >/dev/null 2>&1 & echo ok"]);
      assert.equal(bg.stdout, "ok\n");
      assert.ok((await mountsUnder(bundle)).length >= 1);
      assert.ok(cgroupDirs(cg).length >= 1);
      // Every process of the task, by host pid: init, its keepalive, the setsid'd sleep.
      const procs = readFileSync(join(cgroupDirs(cg)[0] as string, "cgroup.procs"), "utf8")
        .trim()
        .split("\n")
        .map(Number);
      assert.ok(procs.length >= 4, `task processes: ${procs}`);
      await r.tasks.terminate(t);
      assert.deepEqual(await mountsUnder(bundle), []);
      assert.equal(existsSync(bundle), false);
      assert.equal(existsSync(join(r.dataDir, "tasks", t)), false);
      assert.deepEqual(cgroupDirs(cg), []);
      assert.deepEqual(await waitGone([pid, ...procs]), []);
      await assert.rejects(initPid(r, t, binary));
    });
  });
}

describe("runc runtime: CLI", { skip }, () => {
  let r: TestRouter;
  let dataDir: string | undefined;
  before(async () => {
    r = await startRuncRouter();
  });
  after(async () => {
    await killAll();
    await r?.close();
    if (dataDir) await removeDataDir(dataDir);
  });

  it("task create --runtime --memory --cpus --pids-limit --network", async () => {
    const res = await runCli([
      ...["--server", r.address, "task", "create", "--id", "cli1", "--runtime", "runc"],
      ...["--memory", "64MiB", "--cpus", "0.5", "--pids-limit", "32", "--network", "host"],
    ]);
    assert.deepEqual([res.code, res.stdout], [0, "cli1\n"], res.stderr);
    const t = r.daemon.tasks.get("cli1");
    assert.equal(t.runtime.name, "runc");
    assert.deepEqual(t.spec, {
      memoryBytes: 64 * 1024 * 1024,
      cpus: 0.5,
      pidsLimit: 32,
      network: "host",
    });
    const bad = await runCli(["--server", r.address, "task", "create", "--network", "bridge"]);
    assert.equal(bad.code, 125);
    const host = await runCli(["--server", r.address, "task", "create", "--runtime", "host"]);
    assert.equal(host.code, 0, host.stderr);
    assert.equal(r.daemon.tasks.get(host.stdout.trim()).runtime.name, "host");
  });

  it("serve --runtime auto picks runc as root and says so", async () => {
    dataDir = await tempDataDir();
    const serve = spawnCli([
      ...["serve", "--runtime", "auto", "--auth", "none", "--listen", "127.0.0.1:0"],
      ...["--data-dir", dataDir],
    ]);
    await waitForOutput(serve, /listening on 127\.0\.0\.1:\d+ \(runtime runc\)\n/);
    await stopCli(serve);
  });
});
