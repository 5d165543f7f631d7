import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ExecsClient } from "../src/client/execs.ts";
import type { TaskRouterError } from "../src/errors.ts";
import { describeExec } from "../src/exec/exec-info.ts";
import { ExecState, TerminationCause } from "../src/gen/taskrouter/v1/execs_pb.ts";
import { alive, killSessions, waitGone } from "./helpers/procs.ts";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";

/** Asserts that `p` rejects with the error kind `kind` (InvalidArgument, NotFound, ...). */
async function rejectsWith(p: Promise<unknown>, kind: string): Promise<void> {
  await assert.rejects(p, (err: TaskRouterError) => {
    assert.equal(err.kind, kind, err.message);
    return true;
  });
}

describe("exec extensions (taskrouter.v1.Execs)", () => {
  let r: TestRouter;
  let execs: ExecsClient;
  let task: string;
  const pids: number[] = [];
  before(async () => {
    r = await startRouter();
    execs = new ExecsClient(r.client);
    task = await r.newTask();
  });
  after(async () => {
    await killSessions(pids);
    await r.close();
  });

  async function start(argv: string[], opts: Parameters<TestRouter["client"]["start"]>[2] = {}) {
    const id = await r.client.start(task, argv, { stdout: "pipe", stderr: "pipe", ...opts });
    const info = await execs.inspect(task, id);
    if (info.pid) pids.push(info.pid);
    return { id, pid: info.pid };
  }

  it("inspects a finished exec: argv, times, exit status, bytes, cause, pid", async () => {
    const before = Date.now();
    const { id, pid } = await start(
      ["sh", "-c", "cat >/dev/null; printf abc; printf de >&2; exit 3"],
      {
        workdir: "/tmp",
      },
    );
    await r.client.writeStdin(task, id, 0, Buffer.from("12345"), true);
    assert.deepEqual(await r.client.wait(task, id), { code: 3 });
    await collect(r.client.read(task, id, "stdout"));
    await collect(r.client.read(task, id, "stderr"));
    const e = await execs.inspect(task, id);
    assert.equal(e.execId, id);
    assert.deepEqual(e.commandArgs, [
      "sh",
      "-c",
      "cat >/dev/null; printf abc; printf de >&2; exit 3",
    ]);
    assert.equal(e.state, ExecState.EXITED);
    assert.deepEqual(e.exitStatus, { case: "code", value: 3 });
    assert.equal(e.cause, TerminationCause.EXITED);
    assert.equal(e.stdoutBytes, 3n);
    assert.equal(e.stderrBytes, 2n);
    assert.equal(e.stdinBytes, 5n);
    assert.ok(pid > 0);
    assert.equal(e.pid, pid);
    assert.equal(e.pty, false);
    assert.equal(e.workdir, "/tmp");
    assert.ok(Number(e.startedAtMs) >= before - 1000);
    assert.ok(Number(e.endedAtMs) >= Number(e.startedAtMs));
  });

  it("inspects a running PTY exec and lists the task's execs in start order", async () => {
    const { id } = await start(["sleep", "100"], { pty: { rows: 33, cols: 77 } });
    const e = await execs.inspect(task, id);
    assert.equal(e.state, ExecState.RUNNING);
    assert.equal(e.exitStatus.case, undefined);
    assert.equal(e.cause, TerminationCause.UNSPECIFIED);
    assert.equal(e.endedAtMs, 0n);
    assert.equal(e.pty, true);
    assert.deepEqual([e.ptyRows, e.ptyCols], [33, 77]);
    const { id: second } = await start(["true"]);
    await r.client.wait(task, second);
    const listed = (await execs.list(task)).map((x) => x.execId);
    assert.ok(listed.indexOf(id) >= 0 && listed.indexOf(id) < listed.indexOf(second));
    await execs.signal(task, id, "KILL");
    await r.client.wait(task, id);
  });

  it("records why an exec ended: timeout, killed, signaled, exited", async () => {
    const timedOut = await start(["sleep", "100"], { timeoutSecs: 1 });
    const killed = await start(["sleep", "100"]);
    const selfKilled = await start(["sh", "-c", "kill -TERM $$"]);
    const winched = await start(["sh", "-c", "read x; exit 4"]);
    await execs.signal(task, killed.id, "term");
    await execs.signal(task, winched.id, "SIGWINCH"); // its default action ends nothing
    await r.client.writeStdin(task, winched.id, 0, Buffer.from("x\n"));
    const cases: [string, object, TerminationCause][] = [
      [timedOut.id, { signal: 9 }, TerminationCause.TIMEOUT],
      [killed.id, { signal: 15 }, TerminationCause.KILLED],
      [selfKilled.id, { signal: 15 }, TerminationCause.SIGNALED],
      [winched.id, { code: 4 }, TerminationCause.EXITED],
    ];
    for (const [id, status, cause] of cases) {
      assert.deepEqual(await r.client.wait(task, id), status);
      assert.equal(
        (await execs.inspect(task, id)).cause,
        cause,
        `cause of ${JSON.stringify(status)}`,
      );
    }
  });

  it("signals the whole process group: a background child dies too", async () => {
    const { id, pid } = await start(["sh", "-c", "sleep 100 & echo $!; wait"]);
    let text = "";
    for await (const chunk of r.client.read(task, id, "stdout")) {
      text += chunk.toString();
      if (text.includes("\n")) break;
    }
    const child = Number(text.trim());
    assert.ok(child > 0 && child !== pid);
    pids.push(child);
    assert.equal(await alive(child), true);
    await execs.signal(task, id, 15);
    assert.deepEqual(await r.client.wait(task, id), { signal: 15 });
    assert.deepEqual(await waitGone([child]), [], "the background sleep survived");
  });

  it("marks execs killed by task termination as task_terminated, visible after teardown", async () => {
    const other = await r.newTask();
    const id = await r.client.start(other, ["sleep", "100"], { stdout: "pipe" });
    const exec = r.daemon.tasks.get(other).exec(id);
    if (exec.pid) pids.push(exec.pid);
    await r.tasks.terminate(other);
    assert.deepEqual(exec.status, { signal: 9 });
    assert.equal(describeExec(exec).cause, "task_terminated");
    // The exec's final state stays inspectable (for --retention), while
    // Poll and Wait say NOT_FOUND: that is how clients learn a task is gone.
    const seen = await execs.inspect(other, id);
    assert.equal(seen.cause, TerminationCause.TASK_TERMINATED);
    assert.equal(seen.state, ExecState.EXITED);
    const listed = await execs.list(other);
    assert.deepEqual(
      listed.map((e) => [e.execId, e.cause]),
      [[id, TerminationCause.TASK_TERMINATED]],
    );
    await rejectsWith(execs.inspect(other, "no-such-exec"), "NotFound");
    await rejectsWith(r.client.poll(other, id), "NotFound");
    await rejectsWith(r.client.wait(other, id), "NotFound");
  });

  it("refuses bad requests with the right codes and changes nothing", async () => {
    const { id } = await start(["sleep", "100"]);
    await rejectsWith(execs.inspect(task, "no-such-exec"), "NotFound");
    await rejectsWith(execs.inspect("no-such-task", id), "NotFound");
    await rejectsWith(execs.list("no-such-task"), "NotFound");
    await rejectsWith(execs.signal(task, id, "NOPE"), "InvalidArgument");
    await rejectsWith(execs.signal(task, id, 0), "InvalidArgument");
    await rejectsWith(execs.signal(task, id, 65), "InvalidArgument");
    await rejectsWith(execs.resize(task, id, 40, 100), "FailedPrecondition"); // no terminal
    const { id: pty } = await start(["sleep", "100"], { pty: { rows: 24, cols: 80 } });
    await rejectsWith(execs.resize(task, pty, 0, 100), "InvalidArgument");
    await rejectsWith(execs.resize(task, pty, 24, 70000), "InvalidArgument");
    const info = await execs.inspect(task, pty);
    assert.deepEqual([info.ptyRows, info.ptyCols], [24, 80]);
    assert.equal((await execs.inspect(task, id)).state, ExecState.RUNNING);
    await execs.signal(task, id, 9);
    await execs.signal(task, pty, 9);
    await r.client.wait(task, id);
    await r.client.wait(task, pty);
    await rejectsWith(execs.signal(task, id, 9), "FailedPrecondition"); // already exited
    await execs.resize(task, pty, 30, 90); // OK: nothing to do once exited
  });
});
