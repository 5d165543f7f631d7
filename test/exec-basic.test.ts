import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";

describe("exec basics (project client, host runtime)", () => {
  let r: TestRouter;
  let task: string;
  before(async () => {
    r = await startRouter();
    task = await r.newTask();
  });
  after(() => r.close());

  it("runs a command and reports its exit code and output", async () => {
    const id = await r.client.start(task, ["sh", "-c", "echo out; echo err >&2; exit 3"], {
      stdout: "pipe",
      stderr: "pipe",
    });
    assert.deepEqual(await r.client.wait(task, id), { code: 3 });
    assert.equal((await collect(r.client.read(task, id, "stdout"))).toString(), "out\n");
    assert.equal((await collect(r.client.read(task, id, "stderr"))).toString(), "err\n");
  });

  it("merges stderr into stdout in write order", async () => {
    const id = await r.client.start(task, ["sh", "-c", "echo a; echo b >&2; echo c"], {
      stdout: "pipe",
      stderr: "stdout",
    });
    assert.equal((await collect(r.client.read(task, id, "stdout"))).toString(), "a\nb\nc\n");
    assert.equal((await collect(r.client.read(task, id, "stderr"))).length, 0);
  });
});
