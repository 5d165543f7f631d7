import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { RouterClient } from "../src/client/client.ts";
import { RpcError } from "../src/client/errors.ts";
import { alive, killSessions, waitSessionsGone, writeRandomFile } from "./helpers/procs.ts";
import { startProxy } from "./helpers/proxy.ts";
import { collect, liveInSessions, startRouter, type TestRouter } from "./helpers/router.ts";

const MiB = 1024 * 1024;

/** Session ids (= exec pids) of every exec this file started. */
const started = new Set<number>();
let scratch: string;

/** Records the pid of an exec (it leads its own session) for the final no-leftovers check. */
function track(r: TestRouter, task: string, execId: string): number {
  const pid = r.daemon.tasks.get(task).exec(execId).pid;
  assert.ok(pid !== undefined, "the exec has a pid");
  started.add(pid);
  return pid;
}

/** Reads the whole stream, returning its sha256 and length (without holding it in memory). */
async function digest(it: AsyncIterable<Buffer>): Promise<{ sha256: string; length: number }> {
  const h = createHash("sha256");
  let length = 0;
  for await (const c of it) {
    assert.ok(c.length > 0, "no empty chunk");
    h.update(c);
    length += c.length;
  }
  return { sha256: h.digest("hex"), length };
}

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

before(async () => {
  scratch = await mkdtemp(join(tmpdir(), "taskrouter-stream-"));
});
after(async () => {
  await killSessions(started);
  await rm(scratch, { recursive: true, force: true });
});

describe("output streaming (project client)", () => {
  let r: TestRouter;
  let task: string;
  let src32: Buffer;
  let file32: string;
  before(async () => {
    r = await startRouter();
    task = await r.newTask();
    file32 = join(scratch, "src32");
    src32 = await writeRandomFile(file32, 32 * MiB);
  });
  after(() => r.close());

  it("streams 100 MiB of stdout byte-exact (sha256)", async () => {
    const file = join(scratch, "src100");
    const src = await writeRandomFile(file, 100 * MiB);
    const want = sha256(src);
    const id = await r.client.start(task, ["cat", file], { stdout: "pipe" });
    track(r, task, id);
    const got = await digest(r.client.read(task, id, "stdout"));
    assert.equal(got.length, src.length);
    assert.equal(got.sha256, want);
    assert.deepEqual(await r.client.wait(task, id), { code: 0 });
    await rm(file);
  });

  it("resumes a read cut mid-stream with no gap and no repeat (auto-resume)", async () => {
    const proxy = await startProxy(r.address);
    const client = new RouterClient(proxy.address);
    try {
      const id = await r.client.start(task, ["cat", file32], { stdout: "pipe" });
      track(r, task, id);
      const cut = proxy.cutAfter(8 * MiB);
      const got = await digest(client.read(task, id, "stdout"));
      await cut;
      assert.equal(proxy.cuts, 1, "the connection was cut once");
      assert.ok(proxy.connections >= 2, "the client reconnected");
      assert.equal(got.length, src32.length);
      assert.equal(got.sha256, sha256(src32));
    } finally {
      client.close();
      await proxy.close();
    }
  });

  it("a read from offset = bytes received returns exactly the rest after a cut", async () => {
    const proxy = await startProxy(r.address);
    // One try: the cut surfaces as an error instead of being resumed by the client.
    const client = new RouterClient(proxy.address, {
      retry: { tries: 1, baseDelayMs: 10, maxDelayMs: 10 },
    });
    try {
      const id = await r.client.start(task, ["cat", file32], { stdout: "pipe" });
      track(r, task, id);
      void proxy.cutAfter(8 * MiB);
      const parts: Buffer[] = [];
      let failure: unknown;
      try {
        for await (const c of client.read(task, id, "stdout")) parts.push(c);
      } catch (err) {
        failure = err;
      }
      assert.ok(failure, "the cut ended the read with an error");
      const head = Buffer.concat(parts);
      assert.ok(head.length < src32.length, "the cut came before the end of the stream");
      const rest = await collect(r.client.read(task, id, "stdout", { offset: head.length }));
      assert.equal(head.length + rest.length, src32.length);
      assert.ok(Buffer.concat([head, rest]).equals(src32), "head + rest is the source");
    } finally {
      client.close();
      await proxy.close();
    }
  });

  it("reads a finished stream again from 0 and from the middle", async () => {
    const id = await r.client.start(task, ["cat", file32], { stdout: "pipe" });
    track(r, task, id);
    assert.deepEqual(await r.client.wait(task, id), { code: 0 });
    const mid = 12 * MiB + 12345;
    const [all, tail] = await Promise.all([
      collect(r.client.read(task, id, "stdout")),
      collect(r.client.read(task, id, "stdout", { offset: mid })),
    ]);
    assert.ok(all.equals(src32));
    assert.ok(tail.equals(src32.subarray(mid)));
  });
});

describe("output spill to disk (memoryLimit 64 KiB)", () => {
  let r: TestRouter;
  let task: string;
  before(async () => {
    r = await startRouter({ memoryLimit: 64 * 1024 });
    task = await r.newTask();
  });
  after(() => r.close());

  it("keeps 20 MiB written while nobody reads, readable from 0 and the middle", async () => {
    const file = join(scratch, "src20");
    const src = await writeRandomFile(file, 20 * MiB);
    const id = await r.client.start(task, ["cat", file], { stdout: "pipe" });
    track(r, task, id);
    assert.deepEqual(await r.client.wait(task, id), { code: 0 });
    // The stream is on disk, not in memory: a file in the data dir holds most of it
    // (a spill file of the router's, or the task agent's output file).
    const files = (await readdir(r.dataDir, { recursive: true })).map((f) => join(r.dataDir, f));
    const sizes = await Promise.all(
      files.map((f) =>
        stat(f).then(
          (st) => (st.isFile() ? st.size : 0),
          () => 0,
        ),
      ),
    );
    assert.ok(
      sizes.some((s) => s >= 19 * MiB),
      `a file in the data dir holds the output (sizes ${sizes.filter((s) => s > 0).join(",")})`,
    );
    const all = await collect(r.client.read(task, id, "stdout"));
    assert.equal(all.length, src.length);
    assert.ok(all.equals(src), "read from 0 is the source");
    const mid = 10 * MiB + 777;
    const tail = await collect(r.client.read(task, id, "stdout", { offset: mid }));
    assert.ok(tail.equals(src.subarray(mid)), "read from the middle is the source's tail");
    await rm(file);
  });
});

describe("output cap (outputCap 1 MiB)", () => {
  let r: TestRouter;
  let task: string;
  before(async () => {
    r = await startRouter({ outputCap: MiB });
    task = await r.newTask();
  });
  after(() => r.close());

  it("pauses the command past the cap, never truncates, and teardown ends it", {
    timeout: 60_000,
  }, async () => {
    const file = join(scratch, "src5");
    const src = await writeRandomFile(file, 5 * MiB);
    const id = await r.client.start(task, ["head", "-c", "5M", file], { stdout: "pipe" });
    const pid = track(r, task, id);
    const exec = r.daemon.tasks.get(task).exec(id);

    // Read until the cap is reached.
    let got = 0;
    for await (const c of r.client.read(task, id, "stdout")) {
      got += c.length;
      if (got >= MiB) break;
    }
    await sleep(500);
    assert.equal(await r.client.poll(task, id), undefined, "the command did not exit");
    assert.ok(await alive(pid), "the command is still there (blocked on its write)");

    const kept = exec.bytes("stdout");
    assert.ok(kept >= MiB && kept < src.length, `kept ${kept} bytes: at least the cap, not all`);
    const head: Buffer[] = [];
    let n = 0;
    for await (const c of r.client.read(task, id, "stdout")) {
      head.push(c);
      n += c.length;
      if (n >= kept) break;
    }
    const bytes = Buffer.concat(head);
    assert.equal(bytes.length, kept);
    assert.ok(bytes.equals(src.subarray(0, kept)), "the kept bytes are the source's first bytes");

    // A reader waiting at the end; teardown must end it and the command.
    const pending = collect(r.client.read(task, id, "stdout", { offset: kept })).then(
      (b) => ({ ended: b.length }),
      (err: unknown) => ({ error: err }),
    );
    await r.tasks.terminate(task);
    assert.deepEqual(await exec.exited, { signal: 9 });
    const outcome = await pending;
    if ("error" in outcome) {
      assert.ok(outcome.error instanceof RpcError, String(outcome.error));
      assert.equal(outcome.error.kind, "NotFound");
    } else {
      assert.equal(outcome.ended, 0);
    }
    assert.deepEqual(await waitSessionsGone([pid]), []);
    await rm(file);
  });
});

describe("end of a stream with an orphan holding the pipe (drainGraceMs 200)", () => {
  let r: TestRouter;
  let task: string;
  before(async () => {
    r = await startRouter({ drainGraceMs: 200 });
    task = await r.newTask();
  });
  after(() => r.close());

  it("ends the stream after exit + grace with everything written", {
    timeout: 60_000,
  }, async () => {
    const id = await r.client.start(task, ["sh", "-c", "(sleep 300) & echo hi"], {
      stdout: "pipe",
    });
    const pid = track(r, task, id);
    const out = await collect(r.client.read(task, id, "stdout"));
    assert.equal(out.toString(), "hi\n");
    // The stream ended by the grace, not by EOF: the orphan still holds the pipe.
    assert.ok((await liveInSessions([pid])).length > 0, "the orphan is still running");
    assert.deepEqual(await r.client.wait(task, id), { code: 0 });
    await killSessions([pid]);
    assert.deepEqual(await waitSessionsGone([pid]), []);
  });
});

describe("retention (retentionMs 300)", () => {
  let r: TestRouter;
  let task: string;
  before(async () => {
    r = await startRouter({ retentionMs: 300 });
    task = await r.newTask();
  });
  after(() => r.close());

  it("collects a finished exec: Poll and Read get NotFound", async () => {
    // The Wait is open before the exit: the 300 ms of retention cannot run out before it arrives.
    const id = await r.client.start(task, ["sh", "-c", "read l; echo x"], { stdout: "pipe" });
    track(r, task, id);
    const waiting = r.client.wait(task, id);
    await r.client.writeStdin(task, id, 0, Buffer.from("go\n"), true);
    assert.deepEqual(await waiting, { code: 0 });
    let err: unknown;
    const deadline = Date.now() + 15_000;
    while (err === undefined && Date.now() < deadline) {
      try {
        await r.client.poll(task, id);
        await sleep(100);
      } catch (e) {
        err = e;
      }
    }
    assert.ok(err instanceof RpcError, `Poll failed with an RpcError (${String(err)})`);
    assert.equal(err.kind, "NotFound");
    await assert.rejects(collect(r.client.read(task, id, "stdout")), { kind: "NotFound" });
    await assert.rejects(r.client.wait(task, id), { kind: "NotFound" });
  });
});

it("leaves no process started by this file", async () => {
  assert.ok(started.size > 0);
  assert.deepEqual(await waitSessionsGone(started), []);
});
