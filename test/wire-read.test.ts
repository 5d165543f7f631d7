/**
 * Wire compatibility (TaskExecStdioRead): drives the router only through an independent gRPC
 * stack (@grpc/grpc-js + @grpc/proto-loader on the project's .proto files), as
 * the protocol's existing grpc-js clients do. Tasks are created with the
 * project's admin client; every TaskCommandRouter call goes through proto-loader.
 * Covers SPEC: TaskExecStdioRead. Shared helpers: test/helpers/wire-common.ts.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { startH2Proxy } from "./helpers/h2-proxy.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import {
  expectStatus,
  FD,
  grpc,
  MAX_CHUNK,
  STDERR,
  STDOUT,
  WireClient,
} from "./helpers/wire-client.ts";
import { alive, closeChecked, MiB, nextId, text, tracked } from "./helpers/wire-common.ts";

const { status } = grpc;

describe("wire: TaskExecStdioRead", () => {
  const SIZE = 100 * MiB;
  const HALF = 50 * MiB;
  const MIDDLE = 73 * MiB + 12_345;
  let r: TestRouter;
  let w: WireClient;
  let task: string;
  let dir: string;
  let file: string;
  let fullSha: string;
  let middleSha: string;
  let big: string; // a finished exec whose stdout is the 100 MiB file

  before(async () => {
    r = await startRouter();
    w = new WireClient(r.address);
    task = await r.newTask();
    dir = await mkdtemp(join(tmpdir(), "taskrouter-wire-"));
    file = join(dir, "100MiB.bin");
    const fh = await open(file, "w");
    const h = createHash("sha256");
    for (let i = 0; i < SIZE / MiB; i++) {
      const b = randomBytes(MiB);
      h.update(b);
      await fh.write(b);
    }
    await fh.close();
    fullSha = h.digest("hex");
    const hm = createHash("sha256");
    for await (const c of createReadStream(file, { start: MIDDLE })) hm.update(c as Buffer);
    middleSha = hm.digest("hex");
    big = nextId("rd");
    await w.start({
      task_id: task,
      exec_id: big,
      command_args: ["cat", file],
      stdout_config: STDOUT.PIPE,
    });
    assert.deepEqual(await w.wait(task, big), { code: 0 });
  });
  after(async () => {
    try {
      await closeChecked(r, [w]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  const start = async (argv: string[], extra: Record<string, unknown> = {}) => {
    const exec_id = nextId("rd");
    await w.start({
      task_id: task,
      exec_id,
      command_args: argv,
      stdout_config: STDOUT.PIPE,
      ...extra,
    });
    return exec_id;
  };
  const checkSizes = (s: { min: number; max: number; count: number }) => {
    assert.ok(s.count > 0 && s.min >= 1, `no empty chunk (min ${s.min})`);
    assert.ok(s.max <= MAX_CHUNK, `chunks ≤ 1 MiB (max ${s.max})`);
  };

  it("streams 100 MiB byte-exact to two concurrent readers while the command runs (chunks 1 B..1 MiB)", async () => {
    // First half, wait for stdin, second half: both readers are live across the pause.
    const live = await start([
      "sh",
      "-c",
      `head -c ${HALF} "$0"; read x; tail -c +${HALF + 1} "$0"`,
      file,
    ]);
    let reached = 0;
    let release!: () => void;
    const bothAtHalf = new Promise<void>((res) => {
      release = res;
    });
    const onProgress = () => {
      let hit = false;
      return (n: number) => {
        if (!hit && n >= HALF) {
          hit = true;
          if (++reached === 2) release();
        }
      };
    };
    const readers = [0, 1].map(() =>
      w.readHash({ task_id: task, exec_id: live, offset: 0 }, onProgress()),
    );
    await bothAtHalf;
    assert.equal(await w.poll(task, live), undefined, "still running at the pause");
    await w.write({ task_id: task, exec_id: live, offset: 0, data: Buffer.from("\n"), eof: true });
    for (const res of await Promise.all(readers)) {
      assert.equal(res.length, SIZE);
      assert.equal(res.sha256, fullSha);
      checkSizes(res.sizes);
    }
    assert.deepEqual(await w.wait(task, live), { code: 0 });
  });

  it("reads the finished stream again from 0 and from the middle", async () => {
    const all = await w.readHash({
      task_id: task,
      exec_id: big,
      offset: 0,
      file_descriptor: FD.STDOUT,
    });
    assert.equal(all.length, SIZE);
    assert.equal(all.sha256, fullSha);
    checkSizes(all.sizes);
    const mid = await w.readHash({ task_id: task, exec_id: big, offset: MIDDLE });
    assert.equal(mid.length, SIZE - MIDDLE);
    assert.equal(mid.sha256, middleSha);
    checkSizes(mid.sizes);
  });

  it("after the connection drops mid-stream, reading from the bytes received gives the rest (no gap, no repeat)", async (t) => {
    const proxy = await startH2Proxy(r.address);
    const pw = new WireClient(proxy.address);
    try {
      const h = createHash("sha256");
      let received = 0;
      let cuts = 0;
      let errors = 0;
      while (cuts < 3) {
        try {
          for await (const msg of pw.read({ task_id: task, exec_id: big, offset: received })) {
            h.update(msg.data);
            received += msg.data.length;
            if (received >= (cuts + 1) * 20 * MiB && cuts < 3) {
              cuts++;
              proxy.cut();
            }
          }
          if (received === SIZE) break;
        } catch (err) {
          errors++;
          const code = (err as grpc.ServiceError).code;
          assert.ok(
            [status.UNAVAILABLE, status.CANCELLED, status.INTERNAL, status.UNKNOWN].includes(code),
            `a dropped connection gives a retryable code, got ${status[code]}`,
          );
        }
      }
      if (received < SIZE) {
        for await (const msg of pw.read({ task_id: task, exec_id: big, offset: received })) {
          h.update(msg.data);
          received += msg.data.length;
        }
      }
      t.diagnostic(`${cuts} cuts, ${errors} broken calls`);
      assert.ok(errors >= 1, "the cut broke at least one call");
      assert.equal(received, SIZE);
      assert.equal(h.digest("hex"), fullSha);
    } finally {
      pw.close();
      await proxy.close();
    }
  });

  it("at the exact end of a finished stream: OK and no data; past it: OUT_OF_RANGE", async () => {
    const e = await start(["printf", "hello"]);
    assert.deepEqual(await w.wait(task, e), { code: 0 });
    assert.equal(text((await w.readAll({ task_id: task, exec_id: e, offset: 3 })).data), "lo");
    assert.deepEqual((await w.readAll({ task_id: task, exec_id: e, offset: 5 })).sizes, []);
    await expectStatus(w.readAll({ task_id: task, exec_id: e, offset: 6 }), status.OUT_OF_RANGE);
    await expectStatus(
      w.readAll({ task_id: task, exec_id: big, offset: SIZE + 1 }),
      status.OUT_OF_RANGE,
    );
    await expectStatus(
      w.readAll({ task_id: task, exec_id: e, offset: 1, file_descriptor: FD.STDERR }),
      status.OUT_OF_RANGE,
    );
  });

  it("a huge offset (2^64-1) past the end of a finished stream is OUT_OF_RANGE too", async () => {
    const e = await start(["printf", "x"]);
    assert.deepEqual(await w.wait(task, e), { code: 0 });
    await expectStatus(
      w.readAll({ task_id: task, exec_id: e, offset: "18446744073709551615" as unknown as number }),
      status.OUT_OF_RANGE,
    );
  });

  it("an offset past the current end of a running stream waits until the data exists", async () => {
    const e = await start(["sh", "-c", "printf abc; read x; printf defgh"]);
    let first = "";
    for await (const msg of w.read({ task_id: task, exec_id: e })) {
      first += text(msg.data);
      if (first.length >= 3) break;
    }
    assert.equal(first, "abc");
    const ahead = tracked(w.readAll({ task_id: task, exec_id: e, offset: 5 }));
    assert.equal(await w.poll(task, e), undefined);
    await sleep(200); // room for a wrong early answer (OUT_OF_RANGE, or an empty end)
    assert.equal(ahead.settled(), false, "a read past the current end ended early");
    await w.write({ task_id: task, exec_id: e, offset: 0, data: Buffer.from("\n"), eof: true });
    assert.equal(text((await ahead.promise).data), "fgh"); // bytes 5.. of "abcdefgh"
    assert.deepEqual(await w.wait(task, e), { code: 0 });
  });

  it("a DEVNULL stream read waits for the command, then ends with OK and no data", async () => {
    const e = await start(["sh", "-c", "read x; echo gone; echo err >&2"], {
      stdout_config: STDOUT.DEVNULL,
    });
    const rd = tracked(w.readAll({ task_id: task, exec_id: e, file_descriptor: FD.STDOUT }));
    const rdErr = tracked(w.readAll({ task_id: task, exec_id: e, file_descriptor: FD.STDERR }));
    assert.equal(await w.poll(task, e), undefined);
    await sleep(200);
    assert.equal(rd.settled() || rdErr.settled(), false, "a DEVNULL read ended before the command");
    await w.write({ task_id: task, exec_id: e, offset: 0, eof: true });
    assert.deepEqual((await rd.promise).sizes, []);
    assert.deepEqual((await rdErr.promise).sizes, []);
    assert.deepEqual(await w.poll(task, e), { code: 0 });
  });

  it("merged stderr: stdout carries both in write order, stderr is empty and ends at exit", async () => {
    const e = await start(["sh", "-c", "read x; echo a; echo b >&2; echo c"], {
      stderr_config: STDERR.STDOUT,
    });
    const errRead = tracked(w.readAll({ task_id: task, exec_id: e, file_descriptor: FD.STDERR }));
    assert.equal(await w.poll(task, e), undefined);
    await sleep(200);
    assert.equal(errRead.settled(), false, "the merged stderr read ended before the command");
    await w.write({ task_id: task, exec_id: e, offset: 0, eof: true });
    assert.equal(text((await w.readAll({ task_id: task, exec_id: e })).data), "a\nb\nc\n");
    assert.deepEqual((await errRead.promise).sizes, []);

    const many = await start(
      ["sh", "-c", "i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo o$i; echo e$i >&2; done"],
      {
        stderr_config: STDERR.STDOUT,
      },
    );
    assert.deepEqual(await w.wait(task, many), { code: 0 });
    const want = Array.from({ length: 300 }, (_, i) => `o${i + 1}\ne${i + 1}\n`).join("");
    assert.equal(text((await w.readAll({ task_id: task, exec_id: many })).data), want);
  });

  it("a descendant holding the pipe is cut off after the grace; the stream ends", async () => {
    const e = await start(["sh", "-c", "sleep 60 & echo $!"]);
    assert.deepEqual(await w.wait(task, e), { code: 0 });
    const res = await w.readAll({ task_id: task, exec_id: e });
    const pid = Number(text(res.data).trim());
    assert.ok(pid > 0, text(res.data));
    try {
      assert.equal(await alive(pid), true, "the orphan still runs (it was only cut off)");
    } finally {
      process.kill(pid, "SIGKILL");
    }
  });

  it("a cancelled read leaves the command running", async () => {
    const e = await start(["sh", "-c", "echo x; read y; exit 2"]);
    const stream = w.read({ task_id: task, exec_id: e });
    const got = await new Promise<string>((res, rej) => {
      stream.once("data", (m: { data: Buffer }) => res(text(m.data)));
      stream.once("error", rej);
    });
    assert.equal(got, "x\n");
    const ended = new Promise<grpc.ServiceError>((res) => stream.once("error", res));
    stream.cancel();
    assert.equal((await ended).code, status.CANCELLED);
    assert.equal(await w.poll(task, e), undefined);
    await w.write({ task_id: task, exec_id: e, offset: 0, eof: true });
    assert.deepEqual(await w.wait(task, e), { code: 2 });
  });

  it("NOT_FOUND for an unknown task or exec; INVALID_ARGUMENT for an unknown file_descriptor", async () => {
    await expectStatus(w.readAll({ task_id: "no-such-task", exec_id: "x" }), status.NOT_FOUND);
    await expectStatus(w.readAll({ task_id: task, exec_id: "no-such-exec" }), status.NOT_FOUND);
    await expectStatus(
      w.readAll({ task_id: task, exec_id: big, file_descriptor: 5 }),
      status.INVALID_ARGUMENT,
    );
  });
});
