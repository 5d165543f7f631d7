import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { stdinStatus } from "../src/client/stdin-stream.ts";
import {
  countBytes,
  countPath,
  RING_SIZE,
  runs,
  SPARE_NAME,
  stdinWritten,
  writeRing,
} from "../src/runtime/agent/stdin-ring.ts";
import { KillableRouter } from "./helpers/killable-router.ts";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";

/**
 * Stdin of agent execs goes through KEY.in as a 64 MiB ring (native/task-agent.c,
 * "Stdin ring"; src/runtime/agent/stdin-ring.ts): bytes must arrive exact through
 * many wraps and in writes larger than the ring, survive a router SIGKILL mid-ring,
 * and a task's next exec reuses the spare ring without seeing a byte of the last one.
 */
const MiB = 1024 * 1024;
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

describe("stdin ring", () => {
  let r: TestRouter;
  let task: string;
  before(async () => {
    r = await startRouter();
    task = await r.newTask();
  });
  after(() => r.close());

  const agentDir = () => join(r.dataDir, "tasks", task, "agent");

  /** Runs `sha256sum` on `writes` (one TaskExecStdinWrite each, EOF on the last); its digest. */
  const digestOf = async (writes: Buffer[]) => {
    const id = await r.client.start(task, ["sha256sum"], { stdout: "pipe", stderr: "pipe" });
    let off = 0;
    for (const [i, w] of writes.entries()) {
      await r.client.writeStdin(task, id, off, w, i === writes.length - 1);
      off += w.length;
    }
    assert.deepEqual(await r.client.wait(task, id), { code: 0 });
    return (await collect(r.client.read(task, id, "stdout"))).toString().split(" ")[0];
  };

  it("160 MiB in 16 MiB writes wraps the ring twice and arrives exact", async () => {
    const writes = Array.from({ length: 10 }, () => randomBytes(16 * MiB));
    assert.equal(await digestOf(writes), sha(Buffer.concat(writes)));
  });

  it("one write larger than the ring goes in as the command takes it", async () => {
    const big = randomBytes(RING_SIZE + 32 * MiB + 123);
    assert.equal(await digestOf([big]), sha(big));
  });

  it("unaligned writes cross the ring's end mid-write and arrive exact", async () => {
    const writes = Array.from({ length: 8 }, () => randomBytes(10 * MiB + 7));
    assert.equal(await digestOf(writes), sha(Buffer.concat(writes)));
  });

  it("a write larger than the ring waits for a slow reader instead of overwriting it", async () => {
    const big = randomBytes(RING_SIZE + 5 * MiB + 3);
    const argv = ["sh", "-c", "sleep 1; exec sha256sum"];
    const id = await r.client.start(task, argv, { stdout: "pipe", stderr: "pipe" });
    await r.client.writeStdin(task, id, 0, big, true);
    assert.deepEqual(await r.client.wait(task, id), { code: 0 });
    const out = (await collect(r.client.read(task, id, "stdout"))).toString();
    assert.equal(out.split(" ")[0], sha(big));
  });

  it("the task's next exec takes over the spare ring and reads only its own bytes", async () => {
    // Fills the ring with one byte value, so a stale byte would show in the next exec's output.
    await digestOf([Buffer.alloc(RING_SIZE, "A")]);
    const dir = agentDir();
    const spare = join(dir, SPARE_NAME);
    for (let i = 0; i < 200 && !existsSync(spare); i++) await sleep(50);
    assert.ok(existsSync(spare), "the ring of the exec whose command stopped reading is the spare");
    const ino = statSync(spare).ino;
    const counts = () => readdirSync(dir).filter((f) => f.endsWith(".inlen"));
    const before = new Set(counts());
    assert.ok(
      [...before].some((f) => readFileSync(join(dir, f)).equals(countBytes(RING_SIZE))),
      "the exec that gave its ring away still says what was written",
    );

    const id = await r.client.start(task, ["cat"], { stdout: "pipe", stderr: "pipe" });
    await r.client.writeStdin(task, id, 0, Buffer.from("hello"));
    assert.ok(!existsSync(spare), "taken over by the first write");
    const taken = readdirSync(dir).filter(
      (f) => f.endsWith(".in") && statSync(join(dir, f)).ino === ino,
    );
    assert.equal(taken.length, 1, "the new exec's KEY.in is the spare's file");
    const count = readFileSync(countPath(join(dir, taken[0] as string)));
    assert.deepEqual(count, countBytes(5), "its count is only the new bytes");
    await r.client.writeStdin(task, id, 5, Buffer.from(" world"), true);
    assert.deepEqual(await r.client.wait(task, id), { code: 0 });
    assert.equal((await collect(r.client.read(task, id, "stdout"))).toString(), "hello world");
  });
});

describe("stdin ring across a router SIGKILL", () => {
  const router = new KillableRouter(["--runtime", "host"]);
  let client: RouterClient | undefined;
  const serve = async () => {
    client = new RouterClient(await router.start(), {
      retry: { tries: 3, baseDelayMs: 20, maxDelayMs: 100 },
    });
    return client;
  };
  after(async () => {
    if (client) await new TasksClient(client).terminate("t").catch(() => undefined);
    client?.close();
    await router.stop();
  });

  it("the bytes written before the kill are counted from KEY.inlen", {
    timeout: 120_000,
  }, async () => {
    let c = await serve();
    const task = (await new TasksClient(c).create("t")).taskId;
    const input = randomBytes(RING_SIZE + 40 * MiB);
    const cut = RING_SIZE + 16 * MiB; // past the ring's end: KEY.inlen, not the size, says it
    await c.start(task, ["sha256sum"], { stdout: "pipe", stderr: "pipe", execId: "in" });
    for (let off = 0; off < cut; off += 16 * MiB) {
      await c.writeStdin(task, "in", off, input.subarray(off, off + 16 * MiB));
    }
    await router.kill9();
    c.close();
    c = await serve();
    assert.equal((await stdinStatus(c, task, "in")).written, cut);
    await c.writeStdin(task, "in", cut, input.subarray(cut), true);
    assert.deepEqual(await c.wait(task, "in"), { code: 0 });
    const out = (await collect(c.read(task, "in", "stdout"))).toString();
    assert.equal(out.split(" ")[0], sha(input));
  });
});

describe("ring writes", () => {
  // Made when the suite runs (not when a --test-name-pattern run only loads it).
  let dir = "";
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "taskrouter-ring-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("runs() cuts chunks into views of at most the given size, in order", () => {
    const chunks = [Buffer.from("abcde"), Buffer.from("fg"), Buffer.from("hijklmn")];
    const got = [...runs(chunks, 4)].map((r) => r.map((b) => Buffer.from(b).toString()));
    assert.deepEqual(got, [["abcd"], ["e", "fg", "h"], ["ijkl"], ["mn"]]);
  });

  it("writeRing puts bytes that cross the ring's end at its end and its start", async () => {
    const path = join(dir, "ring.in");
    writeFileSync(path, "");
    truncateSync(path, RING_SIZE);
    const fd = openSync(path, "r+");
    try {
      const at = 5 * RING_SIZE - 3; // a fifth lap, 3 bytes before the end
      await writeRing(fd, [Buffer.from("ABCDE"), Buffer.from("FG")], at);
      const tail = Buffer.alloc(3);
      readSync(fd, tail, 0, 3, RING_SIZE - 3);
      const head = Buffer.alloc(5);
      readSync(fd, head, 0, 5, 0);
      assert.equal(tail.toString(), "ABC");
      assert.equal(head.toString(), "DEFG\0");
      assert.equal(statSync(path).size, RING_SIZE, "nothing past the ring");
    } finally {
      closeSync(fd);
    }
  });
});

describe("stdinWritten", () => {
  // Made when the suite runs (not when a --test-name-pattern run only loads it).
  let dir = "";
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "taskrouter-ring-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("reads a ring's count file, a linear file's size, and 0 for what is absent", () => {
    const ring = join(dir, "a.in");
    writeFileSync(ring, Buffer.alloc(4096));
    writeFileSync(countPath(ring), countBytes(77 * MiB));
    assert.equal(stdinWritten(ring, true), 77 * MiB);
    assert.equal(stdinWritten(ring, undefined), 77 * MiB, "a count file says ring");
    assert.equal(stdinWritten(ring, false), 4096, "the agent says linear: the size");
    const linear = join(dir, "b.in");
    writeFileSync(linear, "twelve bytes");
    assert.equal(stdinWritten(linear, undefined), 12);
    assert.equal(stdinWritten(linear, true), 0, "a ring without a count file has nothing written");
    assert.equal(stdinWritten(join(dir, "absent.in"), true), 0);
    assert.equal(stdinWritten(join(dir, "absent.in"), undefined), 0);
  });
});
