/**
 * TaskExecStdinWriteStream and TaskExecStdinWrite cancelled while the
 * command does not read, on a real router in this process: the handler
 * returns at the cancel (it waited for the pipe until the exit), and the
 * bytes it accepted reach the command (resume at the status offset, sha256
 * in the command). "The router saw the cancel": the call counted in
 * taskrouter_rpcs_total.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { SESSION_WINDOW, type StdinSession } from "../src/exec/stdin.ts";
import { STDIN_WINDOW } from "../src/runtime/agent/agent-stdin.ts";
import { TaskManager } from "../src/tasks/task-manager.ts";
import { sample, scrapeProm } from "./helpers/prom.ts";
import { patch, tick, until } from "./helpers/retained.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { grpc, STDOUT, WireClient } from "./helpers/wire-client.ts";
import { closeChecked, leaders, MiB, nextId, tracked } from "./helpers/wire-common.ts";
import { openStdinStream } from "./helpers/wire-stream.ts";

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
