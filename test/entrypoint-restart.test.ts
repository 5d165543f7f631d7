/**
 * A task's entrypoint outlives its router like every exec (issue 12 part 1,
 * "The task agent"): a `taskrouter serve` SIGKILLed while the entrypoint
 * runs, then restarted on the same data dir, still serves its stdout from
 * any offset (starting_offset as asked), takes its stdin at the offset it
 * reached (a replayed prefix is skipped), and reports its exit, which stops
 * the task. Also: `task create -- CMD` and `task ls` through the CLI.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { TaskState } from "../src/gen/taskrouter/v1/tasks_pb.ts";
import { runCli } from "./helpers/cli-run.ts";
import { KillableRouter } from "./helpers/killable-router.ts";
import { runcSkipReason } from "./helpers/runc.ts";
import { FD, WireClient } from "./helpers/wire-client.ts";

const VARIANTS = [
  { label: "host runtime", args: ["--runtime", "host"], skip: undefined as string | undefined },
  { label: "runc runtime", args: ["--runtime", "runc"], skip: await runcSkipReason(), oci: "runc" },
];

/** Reads the entrypoint's stdout from `offset` until it holds `text`. */
async function readUntil(w: WireClient, task_id: string, offset: number, text: string) {
  const call = w.sandboxRead({ task_id, offset, file_descriptor: FD.STDOUT });
  let got = "";
  let start: number | undefined;
  let ended = false;
  try {
    for await (const m of call) {
      assert.ok(m.data.length > 0, "an empty data chunk");
      start ??= Number(m.starting_offset);
      got += m.data.toString();
      if (got.includes(text)) break;
    }
    ended = !got.includes(text);
  } finally {
    call.cancel();
  }
  return { got, start, ended };
}

for (const v of VARIANTS) {
  if (v.skip) console.log(`# entrypoint-restart (${v.label}) skipped: ${v.skip}`);
  describe(`entrypoints survive a router SIGKILL (${v.label})`, { skip: v.skip }, () => {
    const router = new KillableRouter(v.args, v.oci);
    let client: RouterClient | undefined;
    let wire: WireClient | undefined;
    let address = "";

    const serve = async () => {
      address = await router.start();
      client = new RouterClient(address, { retry: { tries: 3, baseDelayMs: 20, maxDelayMs: 100 } });
      wire = new WireClient(address);
    };
    const kill9 = async () => {
      await router.kill9();
      client?.close();
      wire?.close();
    };

    after(async () => {
      if (client) await new TasksClient(client).terminate("t").catch(() => undefined);
      client?.close();
      wire?.close();
      await router.stop();
    });

    it("keeps stdio, stdin offset and exit across the restart; the CLI shows the exit", {
      timeout: 120_000,
    }, async () => {
      await serve();
      const script =
        'echo before; until [ -e go ]; do sleep 0.05; done; echo after; read l; echo "in:$l"; exit 5';
      // Through the CLI: `task create -- CMD ARG...`.
      const created = await runCli([
        "task",
        "create",
        "--id",
        "t",
        "--server",
        address,
        "--",
        "sh",
        "-c",
        script,
      ]);
      assert.equal(created.code, 0, created.stderr);
      assert.equal(created.stdout, "t\n");
      const before = await readUntil(wire as WireClient, "t", 0, "before\n");
      assert.deepEqual([before.start, before.got], [0, "before\n"]);
      await wire?.unary("SandboxStdinWriteV2", {
        task_id: "t",
        offset: 0,
        data: Buffer.from("hel"),
      });
      await kill9();

      await serve();
      const w = wire as WireClient;
      const c = client as RouterClient;
      // The entrypoint is running: the task is, and its stdout resumes where it was.
      assert.equal((await new TasksClient(c).get("t")).state, TaskState.RUNNING);
      const go = await c.start("t", ["touch", "go"]);
      assert.deepEqual(await c.wait("t", go), { code: 0 });
      // Stdin: the first 3 bytes were taken before the kill; the replayed prefix is skipped.
      await w.unary("SandboxStdinWriteV2", {
        task_id: "t",
        offset: 0,
        data: Buffer.from("hello\n"),
      });
      const rest = await readUntil(w, "t", 7, "in:hello\n");
      assert.deepEqual([rest.start, rest.got], [7, "after\nin:hello\n"]);
      // The stream ends with the exit; the task stopped with exit code 5.
      const end = await readUntil(w, "t", 7 + rest.got.length, "never");
      assert.deepEqual([end.got, end.ended], ["", true]);
      const t = await new TasksClient(c).get("t");
      assert.equal(t.state, TaskState.STOPPED);
      assert.equal(t.entrypointExitCode, 5);
      const ls = await runCli(["task", "ls", "--server", address]);
      assert.equal(ls.code, 0, ls.stderr);
      assert.match(ls.stdout, /\bt\s+exited \(code 5\)/);
      // Re-readable after the exit, from 0.
      const again = await readUntil(w, "t", 0, "in:hello\n");
      assert.deepEqual([again.start, again.got], [0, "before\nafter\nin:hello\n"]);
    });
  });
}
