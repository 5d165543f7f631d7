/**
 * Output chunks leave the router as gRPC frames built in their own memory,
 * and their buffers are reused by the same reader once written
 * (src/server/transport/raw-frames.ts, src/util/chunk-pool.ts). Checked
 * through an independent gRPC stack: readers at different offsets, a reader
 * cancelled mid-stream and a slow reader all get exactly the bytes written,
 * and the router found grpc-js's HTTP/2 stream (it warns when a grpc-js
 * upgrade hid it and every response went through grpc-js's copy again).
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type LoggedRouter, startLoggedRouter } from "./helpers/logged-router.ts";
import { STDOUT, WireClient } from "./helpers/wire-client.ts";
import { closeChecked, MiB, nextId } from "./helpers/wire-common.ts";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("output chunks as raw frames from reused buffers", () => {
  const SIZE = 12 * MiB + 777;
  let r: LoggedRouter;
  let w: WireClient;
  let task: string;
  let dir: string;
  let data: Buffer;
  let exec: string;

  before(async () => {
    r = await startLoggedRouter();
    w = new WireClient(r.address);
    task = await r.newTask();
    dir = await mkdtemp(join(tmpdir(), "taskrouter-raw-frames-"));
    data = randomBytes(SIZE);
    await writeFile(join(dir, "data.bin"), data);
    exec = nextId("raw");
    await w.start({
      task_id: task,
      exec_id: exec,
      command_args: ["cat", join(dir, "data.bin")],
      stdout_config: STDOUT.PIPE,
    });
    assert.deepEqual(await w.wait(task, exec), { code: 0 });
  });
  after(async () => {
    try {
      await closeChecked(r, [w]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("gives concurrent readers at different offsets exactly their bytes", async () => {
    const offsets = [0, 1, 3 * MiB + 5, SIZE - 10];
    const results = await Promise.all(
      offsets.map((offset) => w.readHash({ task_id: task, exec_id: exec, offset })),
    );
    results.forEach((res, i) => {
      const want = data.subarray(offsets[i]);
      assert.equal(res.length, want.length, `reader at ${offsets[i]}`);
      assert.equal(res.sha256, sha(want), `reader at ${offsets[i]}`);
    });
  });

  it("keeps a slow reader's earlier chunks intact while later ones are read", async () => {
    const parts: Buffer[] = [];
    for await (const msg of w.read({ task_id: task, exec_id: exec, offset: 0 })) {
      parts.push(msg.data); // kept, not copied: a reused server buffer would not show here,
      if (parts.length % 4 === 0) await sleep(5); // but the bytes on the wire would differ
    }
    assert.equal(sha(Buffer.concat(parts)), sha(data));
  });

  it("serves the next reader correctly after one was cancelled mid-stream", async () => {
    const call = w.read({ task_id: task, exec_id: exec, offset: 0 });
    let got = 0;
    await new Promise<void>((resolve) => {
      call.on("data", (msg: { data: Buffer }) => {
        got += msg.data.length;
        if (got >= 2 * MiB) call.cancel();
      });
      call.on("error", () => resolve());
      call.on("end", () => resolve());
    });
    assert.ok(got >= 2 * MiB && got < SIZE, `cancelled after ${got} bytes`);
    const res = await w.readHash({ task_id: task, exec_id: exec, offset: 7 });
    assert.equal(res.sha256, sha(data.subarray(7)));
  });

  it("serves an entrypoint's output (SandboxStdioReadV2) the same way", async () => {
    const ep = (await r.tasks.create("", { entrypoint: ["cat", join(dir, "data.bin")] })).taskId;
    const read = (offset: number) => w.sandboxRead({ task_id: ep, offset, file_descriptor: 0 });
    const readAll = async (offset: number) => {
      const parts: Buffer[] = [];
      let at = offset;
      for await (const m of read(offset)) {
        assert.equal(Number(m.starting_offset), at, "each message starts where the last ended");
        parts.push(m.data);
        at += m.data.length;
      }
      return Buffer.concat(parts);
    };
    const [all, tail] = await Promise.all([readAll(0), readAll(5 * MiB + 3)]);
    assert.equal(sha(all), sha(data));
    assert.equal(sha(tail), sha(data.subarray(5 * MiB + 3)));
    await r.tasks.terminate(ep);
  });

  it("used the raw-frame path (no warning about grpc-js internals)", () => {
    const warned = r.logs.filter((l) => String(l.msg).includes("grpc-js internals changed"));
    assert.deepEqual(warned, []);
  });
});
