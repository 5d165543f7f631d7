/**
 * The client's in-place framing (src/client/in-place-frames.ts): a staged
 * unary stdin write is framed in its own headroom instead of behind
 * grpc-js's copy. End to end (a router in this process, `sha256sum` in a host
 * task: the bytes that arrive are checked, and the count proves the fast path
 * ran), and against grpc-js's CompressionFilter itself for the cases that
 * must fall back to its own framing (compression, the send limit, memory
 * that is not lent or no longer lent). Uploads (stdin streams over the
 * upload channel) likewise: concurrent uploads from files and buffers, whose
 * chunks are reused as soon as their writes are acknowledged, arrive intact.
 * Fails when a grpc-js upgrade loses the fast path.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type ServerHttp2Session, type ServerHttp2Stream } from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connectivityState, Metadata } from "@grpc/grpc-js";
import { CompressionFilter } from "@grpc/grpc-js/build/src/compression-filter.js";
import { RouterClient, STAGE_FROM } from "../src/client/client.ts";
import { RpcError } from "../src/client/errors.ts";
import {
  framedInPlace,
  frameInPlace,
  installInPlaceFraming,
} from "../src/client/in-place-frames.ts";
import {
  fileSource,
  STDIN_CHUNK,
  type StdinInput,
  writeStdinStream,
} from "../src/client/stdin-stream.ts";
import { withHeadroom } from "../src/util/headroom.ts";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";
import { closeChecked, MiB } from "./helpers/wire-common.ts";

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** A message of `n` random bytes with 16 spare bytes in front (as a staged write has). */
function withRoom(n: number): Buffer {
  const whole = Buffer.alloc(16 + n);
  randomBytes(n).copy(whole, 16);
  return withHeadroom(whole.subarray(16), 16);
}

/** grpc-js's framing step for one message, through a filter built with `options`. */
async function send(options: Record<string, unknown>, message: Buffer) {
  const filter = new CompressionFilter(options, {});
  return (await filter.sendMessage(Promise.resolve({ message }))).message;
}

describe("in-place framing of client requests", () => {
  it("finds grpc-js's CompressionFilter (the fast path is on)", () => {
    assert.equal(installInPlaceFraming(), true);
  });

  it("frames lent memory in its headroom, and copies once the lease ended", async () => {
    installInPlaceFraming();
    const msg = withRoom(1000);
    const endLease = frameInPlace(msg);
    const n = framedInPlace();
    const out = await send({}, msg);
    assert.equal(out.buffer, msg.buffer, "copied although lent");
    assert.equal(out.byteOffset, msg.byteOffset - 5);
    assert.deepEqual([...out.subarray(0, 5)], [0, 0, 0, 0x03, 0xe8]);
    assert.equal(framedInPlace(), n + 1);
    endLease();
    const copied = await send({}, msg);
    assert.notEqual(copied.buffer, msg.buffer);
    assert.deepEqual(copied, out, "grpc-js's own frame differs");
    assert.equal(framedInPlace(), n + 1);
  });

  it("leaves memory not lent (or without room for the prefix), compression and the send limit to grpc-js", async () => {
    installInPlaceFraming();
    const n = framedInPlace();
    const plain = withRoom(64);
    assert.notEqual((await send({}, plain)).buffer, plain.buffer);
    // Lent, but with 4 spare bytes: no room for the prefix.
    const whole = Buffer.alloc(4 + 64);
    const tight = withHeadroom(whole.subarray(4), 4);
    const endTight = frameInPlace(tight);
    assert.notEqual((await send({}, tight)).buffer, tight.buffer);
    endTight();

    const msg = withRoom(4096);
    const endLease = frameInPlace(msg);
    try {
      // gzip (algorithm 2): grpc-js compresses, and marks the frame so.
      const gz = await send({ "grpc.default_compression_algorithm": 2 }, msg);
      assert.equal(gz[0], 1);
      assert.notEqual(gz.buffer, msg.buffer);
      await assert.rejects(send({ "grpc.max_send_message_length": 100 }, msg), (err: unknown) => {
        assert.equal((err as { code?: number }).code, 8); // RESOURCE_EXHAUSTED
        return true;
      });
    } finally {
      endLease();
    }
    assert.equal(framedInPlace(), n);
  });
});

describe("in-place framing, end to end", () => {
  let r: TestRouter;
  let task: string;
  before(async () => {
    r = await startRouter();
    task = await r.newTask();
  });
  after(() => closeChecked(r, []));

  /** `sha256sum` fed by writeStdin in `part`-sized writes; resolves to its digest. */
  const digest = async (data: Buffer, part: number) => {
    const id = await r.client.start(task, ["sha256sum"], { stdout: "pipe", stderr: "pipe" });
    for (let off = 0; off < data.length; off += part) {
      const piece = data.subarray(off, off + part);
      await r.client.writeStdin(task, id, off, piece, off + piece.length >= data.length);
    }
    assert.deepEqual(await r.client.wait(task, id), { code: 0 });
    return (await collect(r.client.read(task, id, "stdout"))).toString().split(" ")[0];
  };

  it("delivers concurrent staged writes intact, each framed in place", async () => {
    const a = randomBytes(12 * MiB + STAGE_FROM + 5); // every piece staged
    const b = randomBytes(9 * MiB + 77);
    const n = framedInPlace();
    const got = await Promise.all([digest(a, 4 * MiB), digest(b, 2 * MiB)]);
    assert.deepEqual(got, [sha(a), sha(b)]);
    assert.equal(framedInPlace(), n + 4 + 5, "some staged writes were copied by grpc-js");
  });

  it("drops a staged buffer after a failed attempt, reuses it after a success", async () => {
    // A router that refuses the token answers before it reads the body: grpc-js may go on
    // sending the lent buffer, which must then never serve another write.
    const strict = await startRouter({ auth: { mode: "jwt" } });
    const c = new RouterClient(strict.address, {
      token: "not-a-token",
      retry: { tries: 1, baseDelayMs: 1, maxDelayMs: 1 },
    });
    try {
      const before = c.stagingCounts;
      await assert.rejects(c.writeStdin("t", "e", 0, randomBytes(4 * MiB)), RpcError);
      assert.equal(c.stagingCounts.taken, before.taken + 1);
      assert.equal(c.stagingCounts.given, before.given, "a failed call's buffer went back");
    } finally {
      c.close();
      await strict.close();
    }
    const data = randomBytes(2 * MiB);
    const given = r.client.stagingCounts.given;
    assert.equal(await digest(data, 2 * MiB), sha(data));
    assert.equal(r.client.stagingCounts.given, given + 1);
  });

  it("frames writes below STAGE_FROM through grpc-js (not lent)", async () => {
    const data = randomBytes(3 * STAGE_FROM);
    const n = framedInPlace();
    assert.equal(await digest(data, STAGE_FROM - 1), sha(data));
    assert.equal(framedInPlace(), n);
  });
});

describe("the upload channel", () => {
  it("acknowledges a write only once its bytes went to the socket (grpc-js keeps no retry buffer)", {
    timeout: 30_000,
  }, async () => {
    // A server that takes the stream but does not read: only its 64 KiB window gets through.
    const server = createServer({ settings: { initialWindowSize: 65_535 } });
    const sessions = new Set<ServerHttp2Session>();
    server.on("session", (s) => sessions.add(s));
    const opened = new Promise<ServerHttp2Stream>((resolve) => server.once("stream", resolve));
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as AddressInfo;
    const c = new RouterClient(`127.0.0.1:${port}`);
    try {
      const id = (b: Buffer) => b;
      const call = c.uploads.makeClientStreamRequest("/s/m", id, id, new Metadata(), {}, () => {});
      call.on("error", () => {});
      let acked = 0;
      let allAcked: () => void = () => {};
      const all = new Promise<void>((resolve) => {
        allAcked = resolve;
      });
      const ack = () => {
        if (++acked === 3) allAcked();
      };
      for (let i = 0; i < 3; i++) call.write(Buffer.alloc(STDIN_CHUNK, i), ack);
      const stream = await opened;
      stream.pause();
      // grpc-js's retry buffer would have acknowledged all three on the next tick.
      for (let i = 0; i < 50; i++) await new Promise(setImmediate);
      assert.equal(acked, 0, "a write was acknowledged before it was sent");
      // Once the server reads, the bytes go out and every write is acknowledged.
      let got = 0;
      stream.on("data", (d: Buffer) => {
        got += d.length;
      });
      stream.resume();
      await all;
      assert.ok(got > 2 * STDIN_CHUNK, `${got} bytes read`);
      call.cancel();
    } finally {
      c.close();
      for (const s of sessions) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe("uploads (stdin streams) framed in place", () => {
  let r: TestRouter;
  let task: string;
  let dir: string;
  before(async () => {
    r = await startRouter();
    task = await r.newTask();
    dir = await mkdtemp(join(tmpdir(), "taskrouter-upload-frames-"));
  });
  after(async () => {
    await closeChecked(r, []);
    await rm(dir, { recursive: true, force: true });
  });

  /** `sha256sum` fed by one TaskExecStdinWriteStream of `source`; resolves to its digest. */
  const digest = async (source: StdinInput) => {
    const id = await r.client.start(task, ["sha256sum"], { stdout: "pipe", stderr: "pipe" });
    await writeStdinStream(r.client, task, id, source);
    assert.deepEqual(await r.client.wait(task, id), { code: 0 });
    return (await collect(r.client.read(task, id, "stdout"))).toString().split(" ")[0];
  };

  it("delivers concurrent uploads intact with every data message framed in place, its memory reused", async () => {
    // Files: pooled chunks of STDIN_CHUNK, reused once written; a Buffer: pieces staged and reused.
    const sizes = [7 * MiB + 3, 5 * MiB + STDIN_CHUNK, 6 * MiB - 1];
    const files = sizes.map((n) => randomBytes(n));
    const paths = files.map((_, i) => join(dir, `f${i}`));
    await Promise.all(files.map((f, i) => writeFile(paths[i] as string, f)));
    const buffer = randomBytes(4 * MiB + 9);
    const n = framedInPlace();
    const staging = r.client.stagingCounts;
    const got = await Promise.all([...paths.map((p) => digest(fileSource(p))), digest(buffer)]);
    assert.deepEqual(got, [...files, buffer].map(sha));
    // Every message of a file; the buffer's pieces but its 9-byte tail (below STAGE_FROM: copied).
    const pieces = Math.floor(buffer.length / STDIN_CHUNK);
    const messages = sizes.reduce((m, b) => m + Math.ceil(b / STDIN_CHUNK), 0) + pieces;
    assert.equal(framedInPlace(), n + messages, "some data messages were copied by grpc-js");
    // The buffer's staged pieces all went back to the pool once written.
    const { taken, given } = r.client.stagingCounts;
    assert.deepEqual([taken - staging.taken, given - staging.given], [pieces, pieces]);
    // They went over the upload channel (opened, so connected, by them).
    assert.equal(
      r.client.uploads.getChannel().getConnectivityState(false),
      connectivityState.READY,
    );
  });
});
