import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { RpcError } from "../src/client/errors.ts";
import { KillableRouter } from "./helpers/killable-router.ts";
import { agentsIn, killSessions } from "./helpers/procs.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";

/**
 * A command runs at most once, whatever happens to the task's agent between
 * the request and its answer: an exec that reached an agent which is gone
 * since (it may have run) stands as SIGKILLed, so a retried TaskExecStart with
 * its exec_id joins it; one that provably never reached a live agent fails
 * UNAVAILABLE and its retry runs it (once). Host runtime, real agents.
 */
const root = process.getuid?.() === 0;
const strace = ["/usr/bin/strace", "/bin/strace"].find((p) => existsSync(p));
const skip = !root
  ? "needs root: the agent is non-dumpable (its /proc/PID/fd and ptrace are root's)"
  : undefined;
const straceSkip = skip ?? (strace ? undefined : "needs strace (apt-get install strace)");
if (skip) console.log(`# exec-at-most-once skipped: ${skip}`);
else if (straceSkip)
  console.log(`# exec-at-most-once (agent killed mid-start) skipped: ${straceSkip}`);

let scratch = "";
const marks = () => join(scratch, "runs");
/** Appends its pid (its session: it calls setsid) to `runs`, then sleeps long. */
const runsOnce = () => ["sh", "-c", `echo $$ >> ${marks()}; exec sleep 1000`];
/** The pids that ran the command so far. */
const runs = (): number[] =>
  existsSync(marks())
    ? readFileSync(marks(), "utf8")
        .split("\n")
        .filter((l) => l !== "")
        .map(Number)
    : [];
async function waitForRuns(n: number): Promise<void> {
  while (runs().length < n) await sleep(20); // bounded by the test's timeout
}

/** Each test's commands outlive their agent: ended by pid (each leads a session). */
async function endRuns(): Promise<void> {
  await killSessions(runs());
  rmSync(scratch, { recursive: true, force: true });
}

describe("a start cut by the agent's end", { skip: straceSkip }, () => {
  let r: TestRouter | undefined;
  let tracer: ChildProcess | undefined;
  afterEach(async () => {
    if (tracer?.pid !== undefined && tracer.exitCode === null) tracer.kill("SIGKILL");
    await endRuns();
    await r?.close();
    r = undefined;
  });

  it("stands as SIGKILLed once the agent forked it, and a retry joins it", {
    timeout: 60_000,
  }, async () => {
    scratch = mkdtempSync(join(tmpdir(), "at-most-once-"));
    r = await startRouter();
    const c = r.client; // retries UNAVAILABLE, as the SDKs do
    const task = await r.newTask();
    assert.deepEqual(await c.wait(task, await c.start(task, ["true"])), { code: 0 });
    const dir = join(r.dataDir, "tasks", task, "agent");
    const [agent] = agentsIn(dir);
    assert.ok(agent !== undefined, "the task has an agent");
    // The agent's first close(2) from now on is its end of the new command's stdin pipe,
    // right after vfork returned: the command runs, `started` was never sent.
    tracer = spawn(strace as string, [
      "-p",
      String(agent),
      "-e",
      "trace=close",
      "-e",
      "inject=close:signal=SIGKILL",
    ]);
    const traced = once(tracer, "exit");
    let said = "";
    tracer.stderr?.on("data", (b: Buffer) => {
      said += b.toString();
    });
    while (!/attached/.test(said)) {
      if (tracer.exitCode !== null) assert.fail(`strace ended: ${said}`);
      await sleep(10);
    }
    const id = await c.start(task, runsOnce(), { execId: "once" });
    await traced;
    assert.deepEqual(agentsIn(dir), [], "the agent was killed mid-start");
    await waitForRuns(1);
    assert.deepEqual(await c.wait(task, id), { signal: 9 }, "lost with its agent");
    assert.equal(await c.start(task, runsOnce(), { execId: "once" }), "once", "joined");
    assert.deepEqual(await c.wait(task, "once"), { signal: 9 });
    const next = await c.start(task, ["true"]);
    assert.deepEqual(await c.wait(task, next), { code: 0 }, "a new agent serves the task");
    assert.equal(runs().length, 1, "ran once");
  });

  it("fails UNAVAILABLE when a live agent never read it, and its retry runs it once", {
    timeout: 60_000,
  }, async () => {
    scratch = mkdtempSync(join(tmpdir(), "at-most-once-"));
    r = await startRouter();
    const task = await r.newTask();
    const c = new RouterClient(r.address, { retry: { tries: 1, baseDelayMs: 1, maxDelayMs: 1 } });
    try {
      assert.deepEqual(await c.wait(task, await c.start(task, ["true"])), { code: 0 });
      const dir = join(r.dataDir, "tasks", task, "agent");
      const [agent] = agentsIn(dir);
      assert.ok(agent !== undefined, "the task has an agent");
      // Stopped, the agent takes a second connection only when it runs again; by then the
      // router's exec request waits behind it. The newest connection is the router's, so
      // the agent closes the router's connection first, with the request unread.
      process.kill(agent, "SIGSTOP");
      const other = connect(join(dir, "agent.sock"));
      await once(other, "connect");
      other.on("error", () => {});
      const first = c.start(task, runsOnce(), { execId: "again" }).then(
        () => "ok",
        (err: unknown) => err,
      );
      await sleep(200); // the request is in the socket (if not, it is answered normally)
      process.kill(agent, "SIGCONT");
      // Its ready list hands the agent the new connection before the request (epoll: in the
      // order they became ready), so the request is never read.
      const answer = await first;
      other.destroy();
      assert.ok(answer instanceof RpcError, `the start failed: ${String(answer)}`);
      assert.equal(answer.code, 14, "UNAVAILABLE: a retry runs it");
      assert.deepEqual(runs(), [], "not run");
      await c.start(task, runsOnce(), { execId: "again" });
      await waitForRuns(1);
      assert.equal(await c.start(task, runsOnce(), { execId: "again" }), "again", "joined");
      assert.equal((await c.poll(task, "again")) ?? "running", "running");
      assert.equal(runs().length, 1, "ran once");
      assert.deepEqual(agentsIn(dir), [agent], "the same agent");
    } finally {
      c.close();
    }
  });
});

/**
 * A host-runtime `taskrouter serve` that a test SIGKILLs and starts again
 * (`serve`); `end` terminates `tasks`, stops it and ends the test's commands.
 */
function restartable() {
  const router = new KillableRouter(["--runtime", "host"]);
  let client: RouterClient | undefined;
  return {
    router,
    serve: async (): Promise<RouterClient> => {
      client = new RouterClient(await router.start(), {
        retry: { tries: 3, baseDelayMs: 20, maxDelayMs: 100 },
      });
      return client;
    },
    end: async (tasks: string[]) => {
      const c = client;
      if (c) for (const t of tasks) await new TasksClient(c).terminate(t).catch(() => undefined);
      client?.close();
      await router.stop();
      await endRuns();
    },
  };
}

describe("a router restarted after the task's agent died", { skip }, () => {
  const { router, serve, end } = restartable();
  after(() => end(["t"]));

  it("does not run a retried start of an exec that went to the dead agent", {
    timeout: 60_000,
  }, async () => {
    scratch = mkdtempSync(join(tmpdir(), "at-most-once-"));
    let c = await serve();
    const task = (await new TasksClient(c).create("t")).taskId;
    await c.start(task, runsOnce(), { execId: "once" });
    await waitForRuns(1);
    const dir = join(router.dataDir as string, "tasks", task, "agent");
    for (const pid of agentsIn(dir)) process.kill(pid, "SIGKILL");
    assert.deepEqual(await c.wait(task, "once"), { signal: 9 });
    await router.kill9();
    c.close();
    c = await serve(); // its agent is gone: the restart launches a new one
    assert.equal(await c.start(task, runsOnce(), { execId: "once" }), "once", "joined");
    assert.deepEqual(await c.poll(task, "once"), { signal: 9 }, "not running again");
    const next = await c.start(task, ["true"]);
    assert.deepEqual(await c.wait(task, next), { code: 0 });
    assert.equal(runs().length, 1, "ran once");
  });
});

describe("a router restarted while a task's agent is stopped", { skip }, () => {
  const { router, serve, end } = restartable();
  let stopped: number | undefined;
  after(async () => {
    if (stopped !== undefined) process.kill(stopped, "SIGCONT");
    await end(["t", "u"]);
  });

  it("comes up and serves the other tasks; the stopped one's execs are lost, never run again", {
    timeout: 120_000,
  }, async () => {
    scratch = mkdtempSync(join(tmpdir(), "at-most-once-"));
    let c = await serve();
    const tasks = new TasksClient(c);
    const task = (await tasks.create("t")).taskId;
    const other = (await tasks.create("u")).taskId;
    await c.start(task, runsOnce(), { execId: "held" });
    await waitForRuns(1);
    assert.deepEqual(await c.wait(other, await c.start(other, ["true"])), { code: 0 });
    const [agent] = agentsIn(join(router.dataDir as string, "tasks", task, "agent"));
    assert.ok(agent !== undefined, "the task has an agent");
    process.kill(agent, "SIGSTOP"); // a process of the task can do this: it is root there
    stopped = agent;
    await router.kill9();
    c.close();
    c = await serve(); // adoption gives up on the stopped agent's list (10 s), then serves
    assert.deepEqual(await c.wait(other, await c.start(other, ["true"])), { code: 0 });
    assert.deepEqual(await c.poll(task, "held"), { signal: 9 }, "adopted as lost");
    assert.equal(await c.start(task, runsOnce(), { execId: "held" }), "held", "joined");
    assert.equal(runs().length, 1, "ran once");
    process.kill(agent, "SIGCONT");
    stopped = undefined;
  });
});
