/**
 * taskrouter-h2read.node (native/h2-read.c) on its own, against a real HTTP/2
 * server (node:http2) that answers what a test tells it to, hostile bytes
 * included: the request it sends, the gRPC framing it hands JS (messages
 * split across frames, chunk boundaries), every way a call ends (status in
 * trailers, reset, cut, a compressed or oversized message, a stream ending
 * inside a message, close()), and its backpressure (at most two chunks
 * unacknowledged). The client's use of it: test/bulk-read.test.ts.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { existsSync } from "node:fs";
import {
  constants,
  createServer,
  type Http2Server,
  type IncomingHttpHeaders,
  type ServerHttp2Stream,
} from "node:http2";
import { createRequire } from "node:module";
import type { AddressInfo, Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Worker } from "node:worker_threads";
import { addonPath } from "../src/util/addon.ts";

interface Addon {
  open(t: string, h: string[], b: Uint8Array, on: (k: string, v: unknown) => void): object;
  ack(h: object): void;
  close(h: object): void;
}
const PATH = addonPath("h2read");
const skip = existsSync(PATH)
  ? undefined
  : `${PATH} is not built (native/build.sh needs libnghttp2-dev)`;
if (skip) console.log(`# skipping the h2read addon tests: ${skip}`);
const addon = skip ? undefined : (createRequire(import.meta.url)(PATH) as Addon);
const MiB = 1024 * 1024;

const frame = (msg: Buffer, flag = 0) => {
  const h = Buffer.alloc(5);
  h[0] = flag;
  h.writeUInt32BE(msg.length, 1);
  return Buffer.concat([h, msg]);
};

/** A request's header fields as the addon takes them. */
const head = (path: string) => [
  ":method",
  "POST",
  ":scheme",
  "http",
  ":authority",
  "x",
  ":path",
  path,
];

/** Answers `s` with `body` and an OK status in trailers, as a gRPC server does. */
function answerOk(s: ServerHttp2Stream, body: Buffer): void {
  s.respond({ ":status": 200 }, { waitForTrailers: true });
  s.on("wantTrailers", () => s.sendTrailers({ "grpc-status": "0" }));
  s.end(body);
}

/** Messages out of the addon's chunks, as the client splits them. */
function unframe(chunks: ArrayBuffer[]): Buffer[] {
  const out: Buffer[] = [];
  for (const c of chunks) {
    const b = Buffer.from(c);
    for (let at = 0; at < b.length; ) {
      assert.equal(b[at], 0, "flag byte");
      const len = b.readUInt32BE(at + 1);
      out.push(b.subarray(at + 5, at + 5 + len));
      at += 5 + len;
    }
  }
  return out;
}

interface Result {
  chunks: ArrayBuffer[];
  fields: string[];
  error: string | null;
  rst: number;
}

/** Runs one call; each chunk is acknowledged as it comes while `ack.auto` (default). */
function call(
  target: string,
  opts: { headers?: string[]; body?: Buffer; ack?: { auto: boolean } } = {},
): { handle: object; chunks: ArrayBuffer[]; done: Promise<Result> } {
  const a = addon as Addon;
  const chunks: ArrayBuffer[] = [];
  let finish: (r: Result) => void = () => {};
  const done = new Promise<Result>((resolve) => {
    finish = resolve;
  });
  const headers = opts.headers ?? head("/t");
  const handle = a.open(target, headers, opts.body ?? Buffer.alloc(0), (kind, v) => {
    if (kind === "data") {
      chunks.push(v as ArrayBuffer);
      if (opts.ack?.auto !== false) a.ack(handle);
      return;
    }
    const [fields, error, rst] = v as [string[], string | null, number];
    finish({ chunks, fields, error, rst });
  });
  return { handle, chunks, done };
}

const field = (r: Result, name: string) => {
  const i = r.fields.lastIndexOf(name);
  return i >= 0 && i % 2 === 0 ? r.fields[i + 1] : undefined;
};

describe("h2read addon: one gRPC server stream on a thread of its own", { skip }, () => {
  let server: Http2Server;
  let target: string;
  let handler: (s: ServerHttp2Stream, h: IncomingHttpHeaders, body: Buffer) => void = () => {};
  const sockets = new Set<Socket>();
  let accepted = 0;

  before(async () => {
    server = createServer();
    server.on("connection", (c: Socket) => {
      accepted++;
      sockets.add(c);
      c.on("close", () => sockets.delete(c));
    });
    server.on("stream", (s, h) => {
      s.on("error", () => {}); // the resets the tests make
      const parts: Buffer[] = [];
      s.on("data", (c: Buffer) => parts.push(c));
      s.on("end", () => handler(s, h, Buffer.concat(parts)));
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    target = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    for (const c of sockets) c.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("refuses bad arguments with a TypeError and starts nothing", () => {
    const a = addon as Addon;
    const fn = () => {};
    assert.throws(() => a.open(target, ["odd"], Buffer.alloc(0), fn), TypeError);
    assert.throws(() => a.open(target, [], "body" as unknown as Uint8Array, fn), TypeError);
    assert.throws(
      () => a.open(target, [], Buffer.alloc(0), "fn" as unknown as () => void),
      TypeError,
    );
    assert.throws(() => a.open(target, [], Buffer.alloc(2 * MiB), fn), TypeError);
    assert.throws(() => a.ack({}), TypeError);
    assert.throws(() => a.close("x" as unknown as object), TypeError);
  });

  it("sends the request's headers and body; hands over messages split across frames, whole", async () => {
    const msgs = [randomBytes(10), Buffer.alloc(0), randomBytes(6 * MiB), randomBytes(3 * MiB + 7)];
    let seen: { h: IncomingHttpHeaders; body: Buffer } | undefined;
    handler = (s, h, body) => {
      seen = { h, body };
      s.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      s.on("wantTrailers", () => s.sendTrailers({ "grpc-status": "0", "grpc-message": "" }));
      const all = Buffer.concat(msgs.map((m) => frame(m)));
      // Odd-sized writes: prefixes and messages cut at every kind of place.
      for (let at = 0; at < all.length; at += 3 * 65_537)
        s.write(all.subarray(at, at + 3 * 65_537));
      s.end();
    };
    const body = frame(Buffer.from("request"));
    const r = await call(target, {
      headers: [...head("/svc/M"), "authorization", "Bearer t"],
      body,
    }).done;
    assert.equal(r.error, null);
    assert.equal(r.rst, 0);
    assert.equal(field(r, ":status"), "200");
    assert.equal(field(r, "grpc-status"), "0");
    assert.deepEqual(unframe(r.chunks), msgs);
    assert.ok(r.chunks.length >= 2, "a 6 MiB message gets a chunk of its own");
    assert.equal(seen?.h[":path"], "/svc/M");
    assert.equal(seen?.h.authorization, "Bearer t");
    assert.deepEqual(seen?.body, body);
  });

  it("keeps a clean call's connection for the next; redials one the server closed meanwhile", async () => {
    const payload = randomBytes(1000);
    handler = (s) => {
      answerOk(s, frame(payload));
    };
    const ok = async () => {
      const r = await call(target).done;
      assert.equal(r.error, null);
      assert.deepEqual(unframe(r.chunks), [payload]);
    };
    await ok();
    const before = accepted;
    await ok();
    await ok();
    assert.equal(accepted, before, "both calls went over the kept connection");
    for (const c of sockets) c.destroy();
    await ok(); // on the dead kept connection first: redialled, no error
    assert.equal(accepted, before + 1);
    // A call that ends in an error leaves its connection unkept.
    handler = (s) => {
      s.respond({ ":status": 200 });
      s.write(frame(payload));
      s.close(constants.NGHTTP2_INTERNAL_ERROR);
    };
    assert.equal((await call(target).done).rst, constants.NGHTTP2_INTERNAL_ERROR);
    handler = (s) => {
      answerOk(s, frame(payload));
    };
    const afterReset = accepted;
    await ok();
    assert.equal(accepted, afterReset + 1, "the reset call's connection was not kept");
  });

  it("reports a trailers-only answer's status and no data", async () => {
    handler = (s) =>
      s.respond(
        { ":status": 200, "grpc-status": "5", "grpc-message": "no%20such" },
        { endStream: true },
      );
    const r = await call(target).done;
    assert.equal(r.error, null);
    assert.equal(field(r, "grpc-status"), "5");
    assert.equal(field(r, "grpc-message"), "no%20such");
    assert.equal(r.chunks.length, 0);
  });

  const ends: [string, (s: ServerHttp2Stream) => void, string | null, number][] = [
    [
      "a compressed message",
      (s) => s.end(frame(Buffer.from("zz"), 1)),
      "compressed message (none was asked for)",
      -1,
    ],
    [
      "a message over 128 MiB",
      (s) => s.end(Buffer.from([0, 0x08, 0, 0, 1])),
      "message larger than 128 MiB",
      -1,
    ],
    [
      "a stream that ends inside a message",
      (s) => s.end(frame(randomBytes(100)).subarray(0, 60)),
      "stream ended inside a message",
      0,
    ],
    [
      "a stream reset",
      (s) => {
        s.write(frame(randomBytes(100)));
        s.close(constants.NGHTTP2_INTERNAL_ERROR);
      },
      null,
      constants.NGHTTP2_INTERNAL_ERROR,
    ],
    [
      "a cut connection",
      () => {
        for (const c of sockets) c.destroy();
      },
      "connection lost",
      -1,
    ],
  ];
  for (const [what, act, error, rst] of ends) {
    it(`ends with what ended it: ${what}`, async () => {
      handler = (s) => {
        s.respond({ ":status": 200 });
        act(s);
      };
      const r = await call(target).done;
      assert.equal(r.error, error);
      if (rst >= 0) assert.equal(r.rst, rst);
    });
  }

  it("cannot connect: says so", async () => {
    const probe = createServer();
    probe.listen(0, "127.0.0.1");
    await once(probe, "listening");
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const r = await call(`127.0.0.1:${port}`).done;
    assert.equal(r.error, "cannot connect");
  });

  /**
   * Why SYNs cannot be dropped here (not root, no nft), or undefined; else runs `fn` with a
   * free loopback port whose SYNs vanish (an nft table of this test's own, removed after), so
   * connect(2) to it waits.
   */
  const synDropSkip = (): string | undefined => {
    if (process.getuid?.() !== 0) return "dropping SYNs with nft needs root";
    try {
      execFileSync("nft", ["--version"], { stdio: "ignore" });
      return undefined;
    } catch {
      return "nft is not installed (Debian's nftables)";
    }
  };
  const withSynsDropped = async (fn: (target: string) => Promise<void>) => {
    const probe = createServer();
    probe.listen(0, "127.0.0.1");
    await once(probe, "listening");
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const table = `tr_syndrop_${process.pid}`;
    const nft = (cmd: string) =>
      execFileSync("nft", [cmd], { stdio: ["ignore", "ignore", "pipe"] });
    nft(`add table inet ${table}`);
    try {
      nft(`add chain inet ${table} out { type filter hook output priority 0 ; }`);
      nft(`add rule inet ${table} out ip daddr 127.0.0.1 tcp dport ${port} drop`);
      await fn(`127.0.0.1:${port}`);
    } finally {
      nft(`delete table inet ${table}`);
    }
  };

  it("close() while still connecting (SYNs dropped) ends the call 'closed' then, not at the connect timeout", async (t) => {
    const why = synDropSkip();
    if (why) return t.skip(why);
    await withSynsDropped(async (to) => {
      const c = call(to);
      await sleep(300);
      (addon as Addon).close(c.handle);
      // It ends within the 100 ms poll step. Without the check while connecting it would end
      // only at the 20 s connect timeout: 10 s tells the two apart on any machine.
      const r = await Promise.race([c.done, sleep(10_000).then(() => undefined)]);
      assert.ok(r, "the call was still connecting 10 s after close()");
      assert.equal(r.error, "closed");
      assert.equal(c.chunks.length, 0);
    });
  });

  // A hang guard, not a speed limit: the connect timeout is 20 s.
  it("a target that never answers: the call ends 'cannot connect' at the connect timeout (20 s, as grpc-js)", {
    timeout: 60_000,
  }, async (t) => {
    const why = synDropSkip();
    if (why) return t.skip(why);
    await withSynsDropped(async (to) => {
      const r = await call(to).done;
      assert.equal(r.error, "cannot connect");
      assert.deepEqual(r.fields, []);
    });
  });

  it("close() ends a call mid-stream with error 'closed'; close and ack after the end are harmless", async () => {
    handler = (s) => {
      s.respond({ ":status": 200 });
      s.write(frame(randomBytes(1000)));
    };
    const c = call(target);
    while (c.chunks.length === 0) await sleep(10);
    (addon as Addon).close(c.handle);
    const r = await c.done;
    assert.equal(r.error, "closed");
    (addon as Addon).close(c.handle);
    (addon as Addon).ack(c.handle);
  });

  it("a Worker ended mid-call takes its call down cleanly; the process goes on", async () => {
    let streams = 0;
    handler = (s) => {
      streams++;
      s.respond({ ":status": 200 });
      const msg = frame(Buffer.alloc(MiB - 5));
      const pump = () => {
        while (!s.destroyed && s.write(msg)) {}
        if (!s.destroyed) s.once("drain", pump);
      };
      pump();
    };
    const code = `
      const { workerData, parentPort } = require("node:worker_threads");
      const a = require(workerData.path);
      const h = a.open(workerData.target, [":method", "POST", ":scheme", "http", ":authority", "x", ":path", "/w"],
        new Uint8Array(0), (kind) => { if (kind === "data") parentPort.postMessage("data"); });
      // Never acknowledged: the thread waits on its two chunks when the Worker ends.
    `;
    const w = new Worker(code, { eval: true, workerData: { path: PATH, target } });
    await once(w, "message");
    await w.terminate();
    // The process is alive and the addon still serves calls.
    const before = streams;
    handler = (s) => {
      streams++;
      answerOk(s, frame(Buffer.from("ok")));
    };
    const r = await call(target).done;
    assert.equal(r.error, null);
    assert.deepEqual(unframe(r.chunks), [Buffer.from("ok")]);
    assert.equal(streams, before + 1);
  });

  it("holds at most two chunks unacknowledged; the rest waits in the server", async () => {
    const total = 64 * MiB;
    let written = 0;
    handler = (s) => {
      s.respond({ ":status": 200 }, { waitForTrailers: true });
      s.on("wantTrailers", () => s.sendTrailers({ "grpc-status": "0" }));
      const msg = frame(Buffer.alloc(MiB - 5, 7));
      const pump = () => {
        while (written < total) {
          written += msg.length;
          if (!s.write(msg)) return void s.once("drain", pump);
        }
        s.end();
      };
      pump();
    };
    const ack = { auto: false };
    const c = call(target, { ack });
    // Wait until neither side moves any more (no clock in the assertion).
    let last = -1;
    while (written !== last || c.chunks.length < 2) {
      last = written;
      await sleep(300);
    }
    assert.equal(c.chunks.length, 2, "two chunks out, none acknowledged");
    assert.ok(written < total, `the server was held back (${written} of ${total} bytes written)`);
    ack.auto = true;
    (addon as Addon).ack(c.handle);
    (addon as Addon).ack(c.handle);
    const r = await c.done;
    assert.equal(r.error, null);
    assert.equal(
      unframe(r.chunks).reduce((n, m) => n + m.length + 5, 0),
      total,
    );
  });
});
