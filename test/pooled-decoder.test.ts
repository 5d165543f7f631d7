/**
 * Stdin requests are assembled into buffers reused across calls
 * (src/server/transport/pooled-decoder.ts, src/util/message-pool.ts), and a
 * buffer serves again only once the command's pipe took its bytes
 * (src/exec/stdin.ts). The decoder cuts messages exactly as grpc-js's own
 * does, however the bytes arrive; end to end, through an independent gRPC
 * stack, concurrent writers by TaskExecStdinWrite, TaskExecStdinWriteStream
 * and SandboxStdinWriteV2 all deliver exactly their bytes (checked by
 * sha256 inside the task), a slow reader included; and the router found
 * grpc-js's decoder (it warns when an upgrade hid it). The project's client
 * stages what it sends in reused buffers too (RouterClient.stage,
 * fileSource): concurrent writes and uploads through it arrive intact.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create, fromBinary } from "@bufbuild/protobuf";
import { StreamDecoder } from "@grpc/grpc-js/build/src/stream-decoder.js";
import { RouterClient, STAGE_FROM, stdinHeadroom } from "../src/client/client.ts";
import { fileSource, writeStdinStream } from "../src/client/stdin-stream.ts";
import {
  TaskCommandRouter,
  TaskExecStdinWriteRequestSchema,
} from "../src/gen/modal_proto/task_command_router_pb.ts";
import { grpcServiceDef } from "../src/rpc/service-def.ts";
import { FillBudget, PooledDecoder, requestPool } from "../src/server/transport/pooled-decoder.ts";
import { MessagePool } from "../src/util/message-pool.ts";
import { type LoggedRouter, startLoggedRouter } from "./helpers/logged-router.ts";
import { collect } from "./helpers/router.ts";
import { STDOUT, WireClient } from "./helpers/wire-client.ts";
import { closeChecked, MiB, nextId } from "./helpers/wire-common.ts";
import { openStdinStream } from "./helpers/wire-stream.ts";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

function framed(msg: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(msg.length, 1);
  return Buffer.concat([head, msg]);
}

/** Every message `write` returned for `wire` cut into pieces of the given sizes (cycled). */
function decodeAll(d: { write(b: Buffer): Buffer[] }, wire: Buffer, pieces: number[]): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0, i = 0; at < wire.length; i++) {
    const n = pieces[i % pieces.length] as number;
    out.push(...d.write(wire.subarray(at, at + n)));
    at += n;
  }
  return out;
}

describe("PooledDecoder cuts messages as grpc-js's StreamDecoder does", () => {
  const sizes = [0, 1, 5, 4095, 64 * 1024 - 1, 64 * 1024, 200_000, MiB + 3, 0, 17];
  const messages = sizes.map((n) => randomBytes(n));
  const wire = Buffer.concat(messages.map(framed));

  for (const pieces of [[1], [3, 7], [16384], [65536], [wire.length], [5, 65531, 1, 999_999]]) {
    it(`data in pieces of ${pieces.join(", ")} bytes`, () => {
      const ours = decodeAll(new PooledDecoder(-1, new MessagePool()), wire, pieces);
      const theirs = decodeAll(new StreamDecoder(-1), wire, pieces);
      assert.equal(ours.length, messages.length);
      assert.equal(theirs.length, messages.length);
      ours.forEach((m, i) => {
        assert.ok(m.equals(theirs[i] as Buffer), `message ${i} (${sizes[i]} bytes)`);
        assert.ok(m.equals(framed(messages[i] as Buffer)), `message ${i}`);
      });
    });
  }

  it("joins a message above 32 MiB (collected, then joined) as grpc-js does", () => {
    const big = randomBytes(32 * MiB + 9);
    const wire2 = Buffer.concat([framed(big), framed(messages[3] as Buffer)]);
    const ours = decodeAll(new PooledDecoder(-1, new MessagePool()), wire2, [MiB + 1]);
    assert.equal(ours.length, 2);
    assert.ok((ours[0] as Buffer).equals(framed(big)));
    assert.ok((ours[1] as Buffer).equals(framed(messages[3] as Buffer)));
  });

  it("holds at most its budget for messages announced but not complete", () => {
    const budget = new FillBudget(MiB);
    const header = (n: number) => framed(Buffer.alloc(n)).subarray(0, 5);
    const a = new PooledDecoder(-1, new MessagePool(), budget);
    a.write(header(600 * 1024)); // reserves 600 KiB
    assert.equal(budget.take(500 * 1024), false);
    const b = new PooledDecoder(-1, new MessagePool(), budget);
    const msg = randomBytes(600 * 1024); // beyond the budget: collected, joined at the end
    assert.ok((decodeAll(b, framed(msg), [4096])[0] as Buffer).equals(framed(msg)));
    a.abandon(); // its call ended mid-message
    const c = new PooledDecoder(-1, new MessagePool(), budget);
    assert.ok((decodeAll(c, framed(msg), [4096])[0] as Buffer).equals(framed(msg))); // reserved, filled
    assert.equal(budget.take(MiB), true, "a finished message gave its reservation back");
  });

  it("refuses a message past the limit with grpc-js's error", () => {
    const big = framed(Buffer.alloc(1001));
    const err = (d: { write(b: Buffer): Buffer[] }) => {
      try {
        d.write(big);
      } catch (e) {
        return (e as Error).message;
      }
      return "no error";
    };
    assert.equal(err(new PooledDecoder(1000, new MessagePool())), err(new StreamDecoder(1000)));
    assert.match(err(new StreamDecoder(1000)), /larger than max \(1001 vs 1000\)/);
  });
});

describe("MessagePool", () => {
  it("hands a given-back buffer to the next message of a size it fits (≤ 2×)", () => {
    const pool = new MessagePool();
    const a = pool.take(300_000);
    assert.ok(a.length >= 300_000);
    pool.give(a);
    assert.equal(pool.take(100_000).buffer === a.buffer, false, "more than twice the size");
    const b = pool.take(290_000);
    assert.equal(b.buffer, a.buffer);
  });

  it("keeps at most its idle bound, and nothing after the idle time", async () => {
    const pool = new MessagePool(2, 64 * MiB, 50);
    for (const b of [pool.take(MiB), pool.take(MiB), pool.take(MiB)]) pool.give(b);
    assert.equal(pool.stats.buffers, 2);
    // Dropped after 50-100 ms unused: wait for it (bounded), the bound is not what is tested.
    for (let i = 0; i < 100 && pool.stats.buffers > 0; i++)
      await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(pool.stats, { buffers: 0, bytes: 0 });
  });
});

describe("stdin through pooled buffers, end to end", () => {
  let r: LoggedRouter;
  let w: WireClient;
  let task: string;

  before(async () => {
    r = await startLoggedRouter();
    w = new WireClient(r.address, { "grpc.max_send_message_length": 32 * MiB });
    task = await r.newTask();
  });
  after(async () => {
    await closeChecked(r, [w]);
  });

  /** Starts `argv` with stdout piped; returns its id. */
  const start = async (argv: string[]) => {
    const id = nextId("pooled");
    await w.start({
      task_id: task,
      exec_id: id,
      command_args: argv,
      stdout_config: STDOUT.PIPE,
    });
    return id;
  };
  const stdoutOf = async (id: string) => {
    assert.deepEqual(await w.wait(task, id), { code: 0 });
    return (await w.readAll({ task_id: task, exec_id: id, offset: 0 })).data.toString();
  };

  it("gives concurrent unary writers, a slow reader among them, exactly their bytes", async () => {
    const before = requestPool.counts;
    const argvs = [["sha256sum"], ["sha256sum"], ["sh", "-c", "sleep 0.5; exec sha256sum"]];
    const datas = argvs.map((_, i) => randomBytes(24 * MiB + 101 * i));
    const ids = await Promise.all(argvs.map(start));
    await Promise.all(
      ids.map(async (id, i) => {
        const data = datas[i] as Buffer;
        for (let off = 0; off < data.length; off += 8 * MiB) {
          const part = data.subarray(off, off + 8 * MiB);
          const eof = off + part.length >= data.length;
          await w.write({ task_id: task, exec_id: id, offset: off, data: part, eof });
        }
      }),
    );
    const outs = await Promise.all(ids.map(stdoutOf));
    outs.forEach((out, i) => {
      assert.equal(out.split(" ")[0], sha(datas[i] as Buffer), `exec ${i}`);
    });
    // 9 messages of 8 MiB went through the pool, came back, and were reused.
    const after = requestPool.counts;
    const taken = after.taken - before.taken;
    assert.ok(taken >= 9, `taken ${taken}`);
    assert.ok(after.given - before.given >= 9, `given back ${after.given - before.given}`);
    assert.ok(after.fresh - before.fresh < taken, `all ${taken} were new buffers`);
  });

  it("gives a TaskExecStdinWriteStream writer and a unary writer at once their bytes", async () => {
    const [a, b] = [randomBytes(20 * MiB + 7), randomBytes(16 * MiB + 3)];
    const [ida, idb] = await Promise.all([start(["sha256sum"]), start(["sha256sum"])]);
    const streamed = (async () => {
      const s = openStdinStream(w);
      await s.send({ start: { task_id: task, exec_id: ida, offset: 0 } });
      for (let off = 0; off < a.length; off += 256 * 1024) {
        await s.send({ data: a.subarray(off, off + 256 * 1024) });
      }
      await s.send({ end: {} });
      await s.finish();
    })();
    for (let off = 0; off < b.length; off += 4 * MiB) {
      const part = b.subarray(off, off + 4 * MiB);
      const eof = off + part.length >= b.length;
      await w.write({ task_id: task, exec_id: idb, offset: off, data: part, eof });
    }
    await streamed;
    assert.equal((await stdoutOf(ida)).split(" ")[0], sha(a));
    assert.equal((await stdoutOf(idb)).split(" ")[0], sha(b));
  });

  it("gives an entrypoint's stdin (SandboxStdinWriteV2) exactly its bytes", async () => {
    const data = randomBytes(12 * MiB + 5);
    const ep = (await r.tasks.create("", { entrypoint: ["sha256sum"] })).taskId;
    for (let off = 0; off < data.length; off += 2 * MiB) {
      const part = data.subarray(off, off + 2 * MiB);
      const eof = off + part.length >= data.length;
      await w.unary("SandboxStdinWriteV2", { task_id: ep, offset: off, data: part, eof });
    }
    const parts: Buffer[] = [];
    for await (const m of w.sandboxRead({ task_id: ep, offset: 0, file_descriptor: 0 })) {
      parts.push(m.data);
    }
    assert.equal(Buffer.concat(parts).toString().split(" ")[0], sha(data));
    await r.tasks.terminate(ep);
  });

  it("used the pooled decoder (no warning about grpc-js internals)", () => {
    const warned = r.logs.filter((l) => String(l.msg).includes("grpc-js internals changed"));
    assert.deepEqual(warned, []);
  });
});

describe("the client's staging", () => {
  it("serializes a staged TaskExecStdinWrite in place, with UUID ids", () => {
    const client = new RouterClient("127.0.0.1:1");
    try {
      const [taskId, execId] = [crypto.randomUUID(), crypto.randomUUID()];
      const data = randomBytes(STAGE_FROM);
      const staged = client.stage(data, stdinHeadroom(taskId, execId));
      const req = create(TaskExecStdinWriteRequestSchema, {
        taskId,
        execId,
        offset: 123456789012n,
        data: staged.view,
        eof: true,
      });
      const out = grpcServiceDef(TaskCommandRouter).taskExecStdinWrite?.requestSerialize(req);
      assert.ok(out && out.buffer === staged.view.buffer, "the message was copied");
      const back = fromBinary(TaskExecStdinWriteRequestSchema, out);
      assert.deepEqual(
        { ...back, data: Buffer.from(back.data) },
        { ...req, data: Buffer.from(data) },
      );
      staged.release();
    } finally {
      client.close();
    }
  });
});

describe("the client's staged stdin, end to end", () => {
  let r: LoggedRouter;
  let task: string;
  let dir: string;

  before(async () => {
    r = await startLoggedRouter();
    task = await r.newTask();
    dir = await mkdtemp(join(tmpdir(), "taskrouter-staged-"));
  });
  after(async () => {
    try {
      await closeChecked(r, []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  /** Runs sha256sum fed by `feed(execId)`; returns the digest it printed. */
  const digest = async (feed: (id: string) => Promise<unknown>) => {
    const id = await r.client.start(task, ["sha256sum"], { stdout: "pipe", stderr: "pipe" });
    await feed(id);
    assert.deepEqual(await r.client.wait(task, id), { code: 0 });
    return (await collect(r.client.read(task, id, "stdout"))).toString().split(" ")[0];
  };

  it("delivers concurrent writeStdin calls and uploads from a file and from memory", async () => {
    const unary = [randomBytes(20 * MiB + 1), randomBytes(18 * MiB + 9)];
    const file = randomBytes(14 * MiB + 333);
    const memory = randomBytes(9 * MiB + 17);
    await writeFile(join(dir, "src.bin"), file);
    const writes = (data: Buffer) => async (id: string) => {
      for (let off = 0; off < data.length; off += 4 * MiB) {
        const part = data.subarray(off, off + 4 * MiB);
        await r.client.writeStdin(task, id, off, part, off + part.length >= data.length);
      }
    };
    const got = await Promise.all([
      ...unary.map((d) => digest(writes(d))),
      digest((id) => writeStdinStream(r.client, task, id, fileSource(join(dir, "src.bin")))),
      digest((id) => writeStdinStream(r.client, task, id, memory)),
    ]);
    assert.deepEqual(got, [...unary, file, memory].map(sha));
  });
});
