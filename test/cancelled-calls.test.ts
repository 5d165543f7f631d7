/**
 * What a cancelled call leaves behind on a real router (in this process):
 * - TaskExecWait cancelled again and again on a running exec: every call's
 *   signal is collectable once the router saw the cancel (Exec.wait kept a
 *   reaction on `exited` per call, which held the call until the exit);
 * - finished execs of a task agent: their AgentProc and spawn spec (with
 *   the env) are collectable once released (a `.then` on the connection's
 *   `closed` per exec held them for the life of the connection);
 * - TaskExecStdinWriteStream and TaskExecStdinWrite cancelled while the
 *   command does not read: the handler returns (it waited for the pipe
 *   forever), and the bytes it accepted reach the command (resume at the
 *   status offset, sha256 in the command).
 * Objects are observed with WeakRefs and full collections (V8's `gc`,
 * taken as src/util/young-gc.ts does); "the router saw the cancel" is the
 * per-call signal's abort, or the call counted in taskrouter_rpcs_total.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { Exec } from "../src/exec/exec.ts";
import { SESSION_WINDOW, type StdinSession } from "../src/exec/stdin.ts";
import { AgentProc } from "../src/runtime/agent/agent-proc.ts";
import { STDIN_WINDOW } from "../src/runtime/agent/agent-stdin.ts";
import { TaskAgent } from "../src/runtime/agent/task-agent.ts";
import type { SpawnSpec } from "../src/runtime/runtime.ts";
import { TaskManager } from "../src/tasks/task-manager.ts";
import { sample, scrapeProm } from "./helpers/prom.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { grpc, STDOUT, WireClient } from "./helpers/wire-client.ts";
import { closeChecked, leaders, MiB, nextId, tracked } from "./helpers/wire-common.ts";
import { openStdinStream } from "./helpers/wire-stream.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
const tick = () => new Promise((r) => setImmediate(r));

/** How many of `refs` still point to something after full collections. */
async function alive(refs: WeakRef<object>[]): Promise<number> {
  for (let i = 0; i < 3; i++) {
    await tick(); // a WeakRef made or read in this job keeps its target until the job ends
    gc();
  }
  return refs.filter((r) => r.deref() !== undefined).length;
}

/** Replaces `obj[name]` until the returned function is called. */
function patch<T extends object, K extends keyof T>(obj: T, name: K, value: T[K]): () => void {
  const orig = obj[name];
  obj[name] = value;
  return () => {
    obj[name] = orig;
  };
}

/** Resolves once `signal` aborted (the listener holds nothing of the caller). */
function abortOf(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) =>
    signal.addEventListener("abort", () => resolve(), { once: true }),
  );
}

/** A promise and its resolve. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve = () => {};
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Waits (a hang guard, not a timing assertion) until `cond()` holds. */
async function until(what: string, cond: () => boolean | Promise<boolean>): Promise<void> {
  for (const end = Date.now() + 60_000; !(await cond()); await sleep(10)) {
    if (Date.now() > end) throw new Error(`never: ${what}`);
  }
}

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

/** The exec's stdin offset (TaskExecStdinStatus: bytes accepted so far). */
async function accepted(client: WireClient, task_id: string, exec_id: string): Promise<number> {
  return Number(
    (await client.unary("TaskExecStdinStatus", { task_id, exec_id })).num_bytes_written,
  );
}

describe("cancelled stdin writes to a command that does not read", () => {
  let r: TestRouter | undefined;
  let w: WireClient | undefined;
  let metrics = "";
  before(async () => {
    r = await startRouter({ metricsListen: "127.0.0.1:0" });
    w = new WireClient(r.address);
    metrics = `http://${r.daemon.metricsAddress}/metrics`;
  });
  after(() => closeChecked(r, w ? [w] : []));

  const cancelled = async (method: string) =>
    sample(
      await scrapeProm(metrics),
      `taskrouter_rpcs_total{method="/modal.task_command_router.TaskCommandRouter/${method}",code="CANCELLED"}`,
    );

  it("return at the cancel; what they accepted reaches the command", async () => {
    const router = r as TestRouter;
    const client = w as WireClient;
    const task = await router.newTask();
    const exec_id = nextId("stdin");
    // Stopped until SIGCONT: it reads nothing before that, then hashes all of stdin.
    await client.start({
      task_id: task,
      exec_id,
      command_args: ["sh", "-c", "kill -STOP $$; exec sha256sum"],
      stdout_config: STDOUT.PIPE,
    });
    const [pid] = leaders(router);
    assert.ok(pid);
    await until("the command stopped", async () => {
      const s = await readFile(`/proc/${pid}/stat`, "utf8");
      return s.slice(s.lastIndexOf(")") + 2)[0] === "T";
    });
    // The first message of the stream is larger than both windows ahead of a command that
    // reads nothing (the agent answers while the command is at most STDIN_WINDOW behind, the
    // stream keeps SESSION_WINDOW more; the stopped command's pipe holds at most 1 MiB): its
    // write cannot be answered before the command reads.
    const data = randomBytes(96 * MiB);
    const STUCK = 56 * MiB;
    assert.ok(STUCK > STDIN_WINDOW + SESSION_WINDOW + MiB);
    const writes: { settled: () => boolean }[] = [];
    let sent = 0;
    let reached = false;
    const openSession = TaskManager.prototype.openStdinSession;
    const writeStdin = TaskManager.prototype.writeStdin;
    const restore = [
      patch(TaskManager.prototype, "openStdinSession", function (this: TaskManager, ...a) {
        const s: StdinSession = openSession.apply(this, a);
        return {
          write: (d, signal) => {
            const t = tracked(s.write(d, signal));
            writes.push(t);
            sent += d.length;
            if (sent >= STUCK) reached = true;
            return t.promise;
          },
          end: (signal) => s.end(signal),
        };
      }),
      patch(TaskManager.prototype, "writeStdin", function (this: TaskManager, ...a) {
        const t = tracked(writeStdin.apply(this, a));
        writes.push(t);
        reached = true;
        return t.promise;
      }),
    ];
    try {
      // A stream that sends everything; the router stops pulling once its window is full.
      const before = await cancelled("TaskExecStdinWriteStream");
      const call = openStdinStream(client);
      const sending = (async () => {
        await call.send({ start: { task_id: task, exec_id, offset: 0 } });
        await call.send({ data: data.subarray(0, STUCK) });
        for (let off = STUCK; off < data.length; off += MiB) {
          await call.send({ data: data.subarray(off, off + MiB) });
        }
      })();
      sending.catch(() => {});
      await until("a write waits for the command", () => reached);
      call.cancel();
      await assert.rejects(call.result, { code: grpc.status.CANCELLED });
      await until("the router counted the cancel", async () => {
        return (await cancelled("TaskExecStdinWriteStream")) === before + 1;
      });
      await tick();
      assert.ok(writes.length > 0);
      assert.ok(
        writes.every((t) => t.settled()),
        "a write of the cancelled stream still waits for the pipe",
      );

      // A unary write past the window, cancelled the same way.
      const at = await accepted(client, task, exec_id);
      assert.ok(at >= STUCK && at < data.length, `accepted ${at}`);
      const uBefore = await cancelled("TaskExecStdinWrite");
      writes.length = 0;
      reached = false;
      const ac = new AbortController();
      const unary = client.unary(
        "TaskExecStdinWrite",
        { task_id: task, exec_id, offset: at, data: data.subarray(at, at + 16 * MiB) },
        { signal: ac.signal },
      );
      await until("the unary write reached the router", () => reached);
      ac.abort();
      await assert.rejects(unary, { code: grpc.status.CANCELLED });
      await until("the router counted the cancel", async () => {
        return (await cancelled("TaskExecStdinWrite")) === uBefore + 1;
      });
      await tick();
      assert.equal(writes.length, 1);
      assert.ok(writes[0]?.settled(), "the cancelled unary write still waits for the pipe");
    } finally {
      for (const f of restore) f();
    }
    // Nothing lost: resume at the status offset, let the command read, compare hashes.
    const from = await accepted(client, task, exec_id);
    router.daemon.tasks.signalExec(task, exec_id, "SIGCONT");
    const call = openStdinStream(client);
    await call.send({ start: { task_id: task, exec_id, offset: from } });
    for (let off = from; off < data.length; off += MiB) {
      await call.send({ data: data.subarray(off, Math.min(off + MiB, data.length)) });
    }
    await call.send({ end: {} });
    await call.finish();
    assert.deepEqual(await client.wait(task, exec_id), { code: 0 });
    const out = (await client.readAll({ task_id: task, exec_id })).data.toString();
    assert.equal(out.split(" ")[0], createHash("sha256").update(data).digest("hex"));
  });
});
