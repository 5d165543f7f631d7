/**
 * StdinStream with writes in flight (src/exec/stdin.ts): writes are issued
 * to the pipe without waiting for the one before, a streaming session keeps
 * a bounded window of them, and a pooled `data` goes back to its pool only
 * once the pipe took it. Against a pipe whose callbacks the test releases
 * (what is in flight, in what order, when `end` answers), and a real child's
 * stdin (`sha256sum`) fed from a small pool that is reused all the time.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import { SESSION_WINDOW, StdinStream } from "../src/exec/stdin.ts";
import { lendView } from "../src/util/chunk-pool.ts";
import { MessagePool } from "../src/util/message-pool.ts";

const MiB = 1024 * 1024;

/** A pipe that records what it was given and calls back only when told to. */
function heldPipe() {
  const got: Buffer[] = [];
  const held: (() => void)[] = [];
  const pipe = new Writable({
    highWaterMark: 1,
    writev(chunks, cb) {
      for (const c of chunks) got.push(Buffer.from(c.chunk as Buffer));
      held.push(() => cb());
    },
  });
  const release = () => {
    for (const cb of held.splice(0)) cb();
  };
  return { pipe, got, release, bytes: () => got.reduce((n, b) => n + b.length, 0) };
}

const tick = () => new Promise((r) => setImmediate(r));

describe("StdinStream with writes in flight", () => {
  it("answers a session's writes while its window has room, and `end` only after all were taken", async () => {
    const p = heldPipe();
    const s = new StdinStream(p.pipe);
    const session = s.openSession(0);
    const chunk = Buffer.alloc(MiB, 1);
    for (let i = 0; i < 4; i++) await session.write(chunk); // 4 MiB < the window: no wait
    let ended = false;
    const end = session.end().then(() => {
      ended = true;
    });
    await tick();
    assert.equal(ended, false, "end answered before the pipe took the bytes");
    for (let i = 0; i < 10 && !ended; i++) {
      p.release();
      await tick();
    }
    await end;
    assert.equal(p.bytes(), 4 * MiB);
    assert.equal(s.offset, 4 * MiB);
  });

  it("waits for the pipe once a window's worth is in flight", async () => {
    const p = heldPipe();
    const session = new StdinStream(p.pipe).openSession(0);
    const chunk = Buffer.alloc(MiB, 2);
    let answered = 0;
    const writes = (async () => {
      for (let i = 0; i < SESSION_WINDOW / MiB + 2; i++) {
        await session.write(chunk);
        answered++;
      }
    })();
    for (let i = 0; i < 5; i++) await tick();
    assert.equal(answered, SESSION_WINDOW / MiB, "answers beyond the window without the pipe");
    while (answered < SESSION_WINDOW / MiB + 2) {
      p.release();
      await tick();
    }
    await writes;
  });

  it("delivers what an evicted session issued, and refuses what it sends after", async () => {
    const p = heldPipe();
    const s = new StdinStream(p.pipe);
    const a = s.openSession(0);
    for (let i = 0; i < 3; i++) await a.write(Buffer.alloc(1000, 65 + i));
    assert.deepEqual(s.progress(), { written: 3000, closed: false }); // evicts `a`
    await assert.rejects(a.write(Buffer.alloc(10)), { name: "AbortedError" });
    const ended = assert.rejects(a.end(), { name: "AbortedError" }); // after its writes were taken
    for (let i = 0; i < 5; i++) {
      p.release();
      await tick();
    }
    await ended;
    assert.equal(p.bytes(), 3000, "the bytes issued before the eviction arrive, nothing after");
    const b = s.openSession(3000);
    await b.write(Buffer.from("tail"));
    const end = b.end();
    for (let i = 0; i < 5; i++) {
      p.release();
      await tick();
    }
    await end;
    assert.equal(Buffer.concat(p.got).subarray(3000).toString(), "tail");
  });

  it("fails every write after the process went, and issues none of them", async () => {
    const p = heldPipe();
    const s = new StdinStream(p.pipe);
    const session = s.openSession(0);
    await session.write(Buffer.alloc(100, 1));
    s.markExited(); // the process is gone: a streaming write fails (FailedPrecondition)
    p.release(); // the write in flight when it went
    await assert.rejects(session.write(Buffer.alloc(100, 2)), { name: "FailedPreconditionError" });
    await assert.rejects(session.write(Buffer.alloc(100, 3)), { name: "FailedPreconditionError" });
    await assert.rejects(session.end(), { name: "FailedPreconditionError" });
    assert.equal(p.bytes(), 100, "nothing issued after the failure");
  });
});

describe("StdinStream waits that a signal ends", () => {
  it("a cancelled write stops waiting; its bytes stay accepted and reach the pipe", async () => {
    const p = heldPipe();
    const s = new StdinStream(p.pipe);
    const ac = new AbortController();
    const unary = s.write(0, Buffer.alloc(1000, 1), false, ac.signal);
    await tick(); // issued: its bytes are accepted, the pipe holds them
    const session = s.openSession(1000);
    const big = Buffer.alloc(SESSION_WINDOW + MiB, 2); // past the window: waits for the pipe
    const streamed = session.write(big, ac.signal);
    await tick();
    ac.abort();
    await assert.rejects(unary, { name: "CancelledError" });
    await assert.rejects(streamed, { name: "CancelledError" });
    assert.equal(s.offset, 1000 + big.length, "what was issued stays accepted");
    p.release();
    await tick();
    assert.equal(p.bytes(), 1000 + big.length);
  });

  it("a stream's `end` after the exit fails, also past bytes dropped at the exit", async () => {
    const p = heldPipe();
    const s = new StdinStream(p.pipe);
    s.markExited();
    await s.write(0, Buffer.alloc(100, 1), false); // dropped (the process is gone), counted
    const session = s.openSession(s.offset);
    await assert.rejects(session.end(), { name: "FailedPreconditionError" });
  });
});

describe("pooled stdin data into a child's pipe", () => {
  it("reuses a pool's buffers only after the pipe took their bytes (sha256 in the child)", async () => {
    const child = spawn("sha256sum", [], { stdio: ["pipe", "pipe", "inherit"] });
    try {
      const out: Buffer[] = [];
      child.stdout.on("data", (c: Buffer) => out.push(c));
      const exited = new Promise((r) => child.once("exit", r));
      const s = new StdinStream(child.stdin);
      const pool = new MessagePool(2); // two idle buffers: reused all the time
      const data = randomBytes(24 * MiB + 11);
      const session = s.openSession(0);
      for (let off = 0; off < data.length; off += 256 * 1024) {
        const part = data.subarray(off, off + 256 * 1024);
        const buf = pool.take(part.length);
        part.copy(buf);
        const view = buf.subarray(0, part.length);
        lendView(view, pool, buf); // as a pooled request's data
        await session.write(view);
      }
      await session.end();
      await exited;
      const want = createHash("sha256").update(data).digest("hex");
      assert.equal(Buffer.concat(out).toString().split(" ")[0], want);
      const { taken, fresh, given } = pool.counts;
      assert.ok(given > 0 && fresh < taken, `reused: ${JSON.stringify(pool.counts)}`);
    } finally {
      if (child.exitCode === null && child.pid) process.kill(child.pid, "SIGKILL");
    }
  });
});
