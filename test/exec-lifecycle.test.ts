import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { RouterClient } from "../src/client/client.ts";
import { RpcError } from "../src/client/errors.ts";
import { alive, killSessions, pidsFrom, waitGone, waitSessionsGone } from "./helpers/procs.ts";
import { liveInSessions, startRouter, type TestRouter } from "./helpers/router.ts";

/** Session ids (= exec pids, as printed by the exec's `echo $$`) of every exec of this file. */
const started = new Set<number>();

after(() => killSessions(started));

/**
 * Reads stdout until `count` lines arrived and returns them as pids; the
 * command prints them first (e.g. `echo $$; sleep 300 & echo $!`).
 */
async function readPids(
  client: RouterClient,
  task: string,
  execId: string,
  count: number,
): Promise<number[]> {
  let text = "";
  for await (const c of client.read(task, execId, "stdout")) {
    text += c.toString();
    if (text.split("\n").length > count) break;
  }
  const pids = pidsFrom(text, count);
  started.add(pids[0] as number);
  return pids;
}

/** `sh` that prints its pid (the session id), then a child's pid, then sleeps. */
const TREE = "echo $$; sleep 300 & echo $!; sleep 300";

describe("exec lifecycle (project client, host runtime)", () => {
  let r: TestRouter;
  before(async () => {
    r = await startRouter();
  });
  after(() => r.close());

  it("timeout kills the whole process group and reports signal 9", async () => {
    const task = await r.newTask();
    // 3 s: the pids must reach this test, and the child be seen alive, before the kill.
    const id = await r.client.start(task, ["sh", "-c", TREE], { stdout: "pipe", timeoutSecs: 3 });
    const [shPid, childPid] = (await readPids(r.client, task, id, 2)) as [number, number];
    assert.ok(await alive(childPid), "the child sleep runs before the timeout");
    assert.deepEqual(await r.client.wait(task, id), { signal: 9 });
    assert.deepEqual(await r.client.poll(task, id), { signal: 9 });
    assert.deepEqual(await waitGone([shPid, childPid]), [], "sh and its child sleep are gone");
    assert.deepEqual(await waitSessionsGone([shPid]), []);
  });

  it("task teardown kills running execs and their children", async () => {
    const task = await r.newTask();
    const a = await r.client.start(task, ["sh", "-c", TREE], { stdout: "pipe" });
    const b = await r.client.start(task, ["sh", "-c", TREE], { stdout: "pipe" });
    const pa = await readPids(r.client, task, a, 2);
    const pb = await readPids(r.client, task, b, 2);
    const all = [...pa, ...pb];
    for (const p of all) assert.ok(await alive(p), `pid ${p} runs before teardown`);
    // A Wait open during teardown settles (the exit status, or NotFound once collected).
    const waiting = r.client.wait(task, a).then(
      (s) => ({ status: s }),
      (err: unknown) => ({ error: err }),
    );
    await r.tasks.terminate(task);
    assert.deepEqual(await waitGone(all), [], "every exec and child is gone");
    assert.deepEqual(await waitSessionsGone([pa[0] as number, pb[0] as number]), []);
    const w = await waiting;
    if ("error" in w) assert.equal((w.error as RpcError).kind, "NotFound");
    else assert.deepEqual(w.status, { signal: 9 });
  });

  it("after terminate: start gets FailedPrecondition, poll gets NotFound", async () => {
    const task = await r.newTask();
    const id = await r.client.start(task, ["true"]);
    assert.deepEqual(await r.client.wait(task, id), { code: 0 });
    await r.tasks.terminate(task);
    await assert.rejects(r.client.start(task, ["true"]), (err: unknown) => {
      assert.ok(err instanceof RpcError, String(err));
      assert.equal(err.kind, "FailedPrecondition");
      return true;
    });
    await assert.rejects(r.client.poll(task, id), { kind: "NotFound" });
    await assert.rejects(r.client.wait(task, id), { kind: "NotFound" });
    await r.tasks.terminate(task); // safe to repeat
  });

  it("a cancelled wait leaves the exec running; a later wait returns its status", async () => {
    const task = await r.newTask();
    const id = await r.client.start(task, ["sh", "-c", "echo $$; read x; exit 5"], {
      stdout: "pipe",
    });
    const [pid] = (await readPids(r.client, task, id, 1)) as [number];
    const ac = new AbortController();
    const cancelled = r.client.wait(task, id, ac.signal);
    setTimeout(() => ac.abort(), 300);
    await assert.rejects(cancelled);
    assert.equal(await r.client.poll(task, id), undefined, "still running after the cancel");
    assert.ok(await alive(pid), "the process is alive after the cancel");
    await r.client.writeStdin(task, id, 0, Buffer.from("go\n"), true);
    assert.deepEqual(await r.client.wait(task, id), { code: 5 });
    await r.tasks.terminate(task);
  });
});

describe("router shutdown", () => {
  let r: TestRouter;
  before(async () => {
    r = await startRouter();
  });
  after(() => r.close());

  it("ends an open read stream and leaves no exec process alive", { timeout: 60_000 }, async () => {
    const task = await r.newTask();
    const id = await r.client.start(task, ["sh", "-c", TREE], { stdout: "pipe" });
    const other = await r.client.start(task, ["sh", "-c", TREE], { stdout: "pipe" });
    const [pid, child] = (await readPids(r.client, task, id, 2)) as [number, number];
    const [pid2] = (await readPids(r.client, task, other, 1)) as [number];
    // A reader waiting for more output while the router shuts down.
    let received = 0;
    let firstChunk: () => void = () => {};
    const gotFirst = new Promise<void>((resolve) => {
      firstChunk = resolve;
    });
    const reading = (async () => {
      for await (const c of r.client.read(task, id, "stdout")) {
        received += c.length;
        firstChunk();
      }
    })().then(
      () => ({ ended: true as const }),
      (err: unknown) => ({ error: err }),
    );
    // The shutdown comes once the reader has output and waits for more (no fixed sleep).
    await Promise.race([gotFirst, reading]);
    await r.daemon.close();
    const outcome = await reading; // settles: an error or the end, never a hang
    if ("error" in outcome) assert.ok(outcome.error instanceof Error);
    assert.ok(received > 0, "the reader had the output written before shutdown");
    assert.deepEqual(await waitGone([pid, child, pid2]), []);
    assert.deepEqual(await liveInSessions([pid, pid2]), []);
  });
});

it("leaves no process started by this file", async () => {
  assert.ok(started.size >= 6);
  assert.deepEqual(await waitSessionsGone(started), []);
});
