import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { ExecsClient } from "../src/client/execs.ts";
import { stdinStatus } from "../src/client/stdin-stream.ts";
import { KillableRouter } from "./helpers/killable-router.ts";
import { collect } from "./helpers/router.ts";
import { CRUN, runcSkipReason } from "./helpers/runc.ts";

/**
 * Execs outlive their router (issue 14): a router SIGKILLed in the middle of
 * an exec's output and of its stdin, then restarted on the same data dir,
 * serves every exec again: all its output from offset 0, stdin by offset,
 * its exit status (also of execs that ended while no router ran), and a
 * retried start with the same exec_id joins the exec instead of running the
 * command again. The router is a real `taskrouter serve` process.
 */
const VARIANTS = [
  { label: "host runtime", args: ["--runtime", "host"], skip: undefined as string | undefined },
  {
    label: "runc runtime",
    args: ["--runtime", "runc"],
    skip: await runcSkipReason(),
    oci: "runc",
  },
  {
    label: "runc runtime, --oci-runtime crun",
    args: ["--runtime", "runc", "--oci-runtime", CRUN],
    skip: await runcSkipReason(CRUN),
    oci: CRUN,
  },
];

const MiB = 1024 * 1024;

for (const v of VARIANTS) {
  if (v.skip) console.log(`# exec-restart (${v.label}) skipped: ${v.skip}`);
  describe(`execs survive a router SIGKILL (${v.label})`, { skip: v.skip }, () => {
    const router = new KillableRouter(v.args, v.oci);
    let client: RouterClient | undefined;

    const serve = async (): Promise<RouterClient> => {
      client = new RouterClient(await router.start(), {
        retry: { tries: 3, baseDelayMs: 20, maxDelayMs: 100 },
      });
      return client;
    };
    const kill9 = async () => {
      await router.kill9();
      client?.close();
    };

    after(async () => {
      // Terminating the task ends its agent and every exec in it.
      if (client) await new TasksClient(client).terminate("t").catch(() => undefined);
      client?.close();
      await router.stop();
    });

    it("keeps output, stdin, exit status and exec ids across the restart", {
      timeout: 120_000,
    }, async () => {
      let c = await serve();
      const task = (await new TasksClient(c).create("t")).taskId;
      const pipes = { stdout: "pipe", stderr: "pipe" } as const;
      // Output in two bursts: the router dies between them, while the reader is mid-stream.
      await c.start(
        task,
        ["sh", "-c", "seq 1 20000; until [ -e go ]; do sleep 0.05; done; seq 20001 40000"],
        {
          ...pipes,
          execId: "out",
        },
      );
      // Stdin: half before the kill, half after, by offset.
      const input = randomBytes(2 * MiB);
      await c.start(task, ["sha256sum"], { ...pipes, execId: "in" });
      // Ends while no router runs.
      await c.start(task, ["sh", "-c", "until [ -e go ]; do sleep 0.05; done; exit 7"], {
        ...pipes,
        execId: "late",
      });
      // Ended before the kill.
      await c.start(task, ["sh", "-c", "echo early; exit 3"], { ...pipes, execId: "early" });
      // A retried start after the restart must not run it a second time.
      const once_ = [
        "sh",
        "-c",
        "echo run >> runs; until [ -e go ]; do sleep 0.05; done; echo ran",
      ];
      await c.start(task, once_, { ...pipes, execId: "once" });
      assert.deepEqual(await c.wait(task, "early"), { code: 3 });

      const first: Buffer[] = [];
      let got = 0;
      for await (const chunk of c.read(task, "out", "stdout")) {
        first.push(chunk);
        got += chunk.length;
        if (got >= 1000) break;
      }
      await c.writeStdin(task, "in", 0, input.subarray(0, MiB));
      await kill9();

      c = await serve();
      // Let the commands waiting for the file `go` go on (out, late, once).
      const go = await c.start(task, ["touch", "go"]);
      // The retried start joins the running exec.
      assert.equal(await c.start(task, once_, { ...pipes, execId: "once" }), "once");
      assert.deepEqual(await c.wait(task, go), { code: 0 });

      const expected = Array.from({ length: 40000 }, (_, i) => `${i + 1}\n`).join("");
      assert.deepEqual(await c.wait(task, "out"), { code: 0 });
      const all = (await collect(c.read(task, "out", "stdout"))).toString();
      assert.equal(all, expected, "the whole output from offset 0");
      const rest = (await collect(c.read(task, "out", "stdout", { offset: got }))).toString();
      assert.equal(
        Buffer.concat(first).toString() + rest,
        expected,
        "resumed where the reader was",
      );

      const st = await stdinStatus(c, task, "in");
      assert.equal(st.written, MiB, "stdin written so far survives the restart");
      await c.writeStdin(task, "in", 0, input, true); // a replayed prefix is skipped
      assert.deepEqual(await c.wait(task, "in"), { code: 0 });
      const sum = (await collect(c.read(task, "in", "stdout"))).toString();
      assert.equal(sum, `${createHash("sha256").update(input).digest("hex")}  -\n`);

      assert.deepEqual(await c.wait(task, "late"), { code: 7 });
      assert.deepEqual(await c.wait(task, "early"), { code: 3 });
      assert.equal((await collect(c.read(task, "early", "stdout"))).toString(), "early\n");
      assert.deepEqual(await c.wait(task, "once"), { code: 0 });
      const runs = await c.start(task, ["cat", "runs"], { stdout: "pipe" });
      await c.wait(task, runs);
      assert.equal((await collect(c.read(task, runs, "stdout"))).toString(), "run\n");
      const ids = (await new ExecsClient(c).list(task)).map((e) => e.execId).sort();
      for (const id of ["early", "in", "late", "once", "out"]) assert.ok(ids.includes(id));
    });

    it("reports the exit status of execs that ended while no router ran", {
      timeout: 60_000,
    }, async () => {
      let c = client as RouterClient;
      const task = "t";
      await c.start(task, ["sh", "-c", "sleep 0.5; echo bye; exit 9"], {
        stdout: "pipe",
        execId: "gone",
      });
      await kill9();
      await sleep(1500); // the command ends meanwhile (no assertion depends on how long)
      c = await serve();
      assert.deepEqual(await c.wait(task, "gone"), { code: 9 });
      assert.equal((await collect(c.read(task, "gone", "stdout"))).toString(), "bye\n");
    });
  });
}
