/**
 * What a cancelled call leaves behind on a real router (in this process):
 * - TaskExecWait cancelled again and again on a running exec: every call's
 *   signal is collectable once the router saw the cancel (Exec.wait kept a
 *   reaction on `exited` per call, which held the call until the exit);
 *   likewise SandboxStdioReadV2 at the end of a running entrypoint's stream;
 * - finished execs of a task agent: their AgentProc and spawn spec (with
 *   the env) are collectable once released (a `.then` on the connection's
 *   `closed` per exec held them for the life of the connection).
 * Objects are observed with WeakRefs and full collections
 * (test/helpers/retained.ts); "the router saw the cancel" is the per-call
 * signal's abort. Cancelled stdin writes: test/cancelled-stdin.test.ts.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, describe, it } from "node:test";
import { Exec } from "../src/exec/exec.ts";
import { AgentProc } from "../src/runtime/agent/agent-proc.ts";
import { TaskAgent } from "../src/runtime/agent/task-agent.ts";
import type { SpawnSpec } from "../src/runtime/runtime.ts";
import { Entrypoint, entrypointOf } from "../src/tasks/entrypoint.ts";
import { abortOf, alive, deferred, patch, until } from "./helpers/retained.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { FD, grpc, WireClient } from "./helpers/wire-client.ts";
import { closeChecked, nextId } from "./helpers/wire-common.ts";

describe("cancelled TaskExecWait calls", () => {
  let r: TestRouter | undefined;
  let w: WireClient | undefined;
  after(() => closeChecked(r, w ? [w] : []));

  it("leave no call behind on a running exec; a later Wait still gets the exit", async () => {
    r = await startRouter();
    w = new WireClient(r.address);
    const task = await r.newTask();
    const exec_id = nextId("wait");
    await w.start({ task_id: task, exec_id, command_args: ["sleep", "600"] });
    const signals: WeakRef<AbortSignal>[] = [];
    const calls: { aborted: Promise<void> }[] = [];
    let called = deferred();
    const orig = Exec.prototype.wait;
    const restore = patch(Exec.prototype, "wait", function (this: Exec, signal?: AbortSignal) {
      if (signal) {
        signals.push(new WeakRef(signal));
        calls.push({ aborted: abortOf(signal) });
        called.resolve();
      }
      return orig.call(this, signal);
    });
    try {
      const N = 20;
      for (let i = 0; i < N; i++) {
        const ac = new AbortController();
        called = deferred();
        const waiting = w.wait(task, exec_id, { signal: ac.signal });
        await called.promise; // the router's handler waits now
        ac.abort();
        await assert.rejects(waiting, { code: grpc.status.CANCELLED });
        await calls[i]?.aborted; // the router saw the cancel
      }
      assert.equal(signals.length, N);
      assert.equal(await alive(signals), 0, "signals of cancelled Waits still held");
    } finally {
      restore();
    }
    r.daemon.tasks.signalExec(task, exec_id, "SIGKILL");
    assert.deepEqual(await w.wait(task, exec_id), { signal: 9 });
  });
});

describe("cancelled SandboxStdioReadV2 calls at the end of a stream", () => {
  let r: TestRouter | undefined;
  let w: WireClient | undefined;
  after(() => closeChecked(r, w ? [w] : []));

  it("leave no call behind while the entrypoint runs on", async () => {
    r = await startRouter();
    w = new WireClient(r.address);
    // Its stdout ends at once; it runs on: a read at the end waits for the exit.
    const entrypoint = ["sh", "-c", "exec >&- 2>&-; exec sleep 600"];
    const task = (await r.tasks.create("", { entrypoint })).taskId;
    const ep = entrypointOf(r.daemon.tasks.get(task));
    const logs = (ep as unknown as { logs: Record<string, { ended: boolean }> }).logs;
    await until("the entrypoint's stdout ended", () => logs.stdout?.ended === true);
    const signals: WeakRef<AbortSignal>[] = [];
    const calls: { aborted: Promise<void> }[] = [];
    let called = deferred();
    const orig = Entrypoint.prototype.read;
    const restore = patch(Entrypoint.prototype, "read", function (this: Entrypoint, ...a) {
      const signal = a[2];
      if (signal) {
        signals.push(new WeakRef(signal));
        calls.push({ aborted: abortOf(signal) });
        called.resolve();
      }
      return orig.apply(this, a);
    });
    try {
      const N = 20;
      for (let i = 0; i < N; i++) {
        called = deferred();
        const call = w.sandboxRead({ task_id: task, offset: 0, file_descriptor: FD.STDOUT });
        const reading = (async () => {
          for await (const _ of call) assert.fail("no output was written");
        })();
        await called.promise; // the router's handler reads now
        call.cancel();
        await assert.rejects(reading, { code: grpc.status.CANCELLED });
        await calls[i]?.aborted; // the router saw the cancel
      }
      assert.equal(signals.length, N);
      assert.equal(await alive(signals), 0, "signals of cancelled reads still held");
    } finally {
      restore();
    }
  });
});

describe("finished execs of a task agent", () => {
  let r: TestRouter | undefined;
  let w: WireClient | undefined;
  after(() => closeChecked(r, w ? [w] : []));

  it("leave neither their AgentProc nor their spec (env) once released", async () => {
    const N = 10;
    const procs: WeakRef<object>[] = [];
    const specs: WeakRef<object>[] = [];
    const releases: Promise<void>[] = [];
    const allReleased = deferred();
    const spawn = TaskAgent.prototype.spawn;
    const release = AgentProc.prototype.release;
    const restore = [
      patch(TaskAgent.prototype, "spawn", async function (this: TaskAgent, spec: SpawnSpec) {
        specs.push(new WeakRef(spec));
        const p = await spawn.call(this, spec);
        procs.push(new WeakRef(p));
        return p;
      }),
      patch(AgentProc.prototype, "release", function (this: AgentProc) {
        const done = release.call(this);
        releases.push(done);
        if (releases.length === N) allReleased.resolve();
        return done;
      }),
    ];
    try {
      r = await startRouter({ retentionMs: 0 }); // collected (released) right after the exit
      w = new WireClient(r.address);
      const task = await r.newTask();
      for (let i = 0; i < N; i++) {
        const exec_id = nextId("agent");
        const env = { SECRET_VALUE: randomBytes(16).toString("hex") };
        await w.start({ task_id: task, exec_id, command_args: ["true"], env });
      }
      assert.equal(procs.length, N, "every exec went through the task agent");
      await allReleased.promise; // each exited and was collected (no Wait: it may be gone first)
      await Promise.all(releases);
      assert.equal(await alive(procs), 0, "AgentProcs of released execs still held");
      assert.equal(await alive(specs), 0, "spawn specs (argv, env) of released execs still held");
    } finally {
      for (const f of restore) f();
    }
  });
});
