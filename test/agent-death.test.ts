import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ExecsClient } from "../src/client/execs.ts";
import { agentsIn } from "./helpers/procs.ts";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";

/**
 * A task's agent killed by someone (a process of the task can: it is root
 * in its task): its execs end as SIGKILLed for the router with every byte
 * they wrote before, readable from any offset; the next exec starts a new
 * agent.
 */
const skip =
  process.getuid?.() === 0
    ? undefined
    : "needs root: the agent is non-dumpable, so only root can read its /proc/PID/fd";
if (skip) console.log(`# agent-death skipped: ${skip}`);

describe("a task agent that dies", { skip }, () => {
  let r: TestRouter;
  let task: string;
  const orphans: number[] = [];
  before(async () => {
    r = await startRouter();
    task = await r.newTask();
  });
  after(async () => {
    for (const pgid of orphans) {
      try {
        process.kill(-pgid, "SIGKILL");
      } catch {
        // ended
      }
    }
    await r?.close();
  });

  it("ends its execs with their output kept; the next exec gets a new agent", async () => {
    const c = r.client;
    const id = await c.start(task, ["sh", "-c", "seq 1 5000; sleep 1000"], {
      stdout: "pipe",
      stderr: "pipe",
    });
    const info = await new ExecsClient(c).inspect(task, id);
    orphans.push(info.pid as number); // its group runs on without the agent: ended by pid after
    // Wait until the output is all there, then kill the agent.
    const want = Array.from({ length: 5000 }, (_, i) => `${i + 1}\n`).join("");
    let got = "";
    for await (const chunk of c.read(task, id, "stdout")) {
      got += chunk.toString();
      if (got.length >= want.length) break;
    }
    const dir = join(r.dataDir, "tasks", task, "agent");
    const [agent, ...more] = agentsIn(dir);
    assert.ok(agent !== undefined && more.length === 0, "one agent serves the task");
    process.kill(agent, "SIGKILL");
    assert.deepEqual(await c.wait(task, id), { signal: 9 });
    assert.equal((await collect(c.read(task, id, "stdout"))).toString(), want);
    const tail = await collect(c.read(task, id, "stdout", { offset: 4000 }));
    assert.equal(tail.toString(), want.slice(4000));

    const next = await c.start(task, ["echo", "again"], { stdout: "pipe" });
    assert.deepEqual(await c.wait(task, next), { code: 0 });
    assert.equal((await collect(c.read(task, next, "stdout"))).toString(), "again\n");
    const now = agentsIn(dir);
    assert.equal(now.length, 1);
    assert.notEqual(now[0], agent, "a new agent");
  });
});
