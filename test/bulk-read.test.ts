/**
 * Bulk reads (RouterClient.read with `bulk`, TaskFilesystem.readFile): one
 * suite run against both receivers, the native one (src/client/bulk-read.ts
 * on taskrouter-h2read.node) and grpc-js, through a TCP proxy in front of a
 * real router (host tasks): the same bytes, connections reused, resumes
 * across cut connections, offsets, error kinds, cancellation that leaves the
 * command running, early stops that close their connection, and backpressure that holds the router
 * back while the reader stalls. The addon's own framing: test/h2-read-addon.test.ts.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Http2Server, type ServerHttp2Stream } from "node:http2";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { status as grpcStatus, Metadata } from "@grpc/grpc-js";
import { BulkReader } from "../src/client/bulk-read.ts";
import { type ClientOptions, RouterClient } from "../src/client/client.ts";
import { ExecsClient } from "../src/client/execs.ts";
import { TaskFilesystem } from "../src/client/fs.ts";
import { addonPath } from "../src/util/addon.ts";
import { startProxy, type TcpProxy } from "./helpers/proxy.ts";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";

const MiB = 1024 * 1024;
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const ADDON = addonPath("h2read");
const nativeSkip = existsSync(ADDON)
  ? undefined
  : `${ADDON} is not built (native/build.sh needs libnghttp2-dev)`;
if (nativeSkip) console.log(`# skipping the native receiver's variant: ${nativeSkip}`);

const kindOf = (e: unknown) => (e as { kind?: string }).kind;

/** Waits until `value()` stops changing between samples (no clock in any assertion). */
async function settled(value: () => number): Promise<number> {
  let last = -1;
  for (;;) {
    const v = value();
    if (v === last) return v;
    last = v;
    await sleep(300);
  }
}

const receivers: { name: string; opts: ClientOptions; skip: string | undefined }[] = [
  { name: "native receiver", opts: {}, skip: nativeSkip },
  { name: "grpc-js", opts: { bulkReads: false }, skip: undefined },
];

for (const rx of receivers) {
  describe(`bulk reads (${rx.name})`, { skip: rx.skip }, () => {
    let r: TestRouter;
    let proxy: TcpProxy;
    let client: RouterClient;
    let fs: TaskFilesystem;
    let task: string;
    let dir: string;
    let file: string;
    let data: Buffer;
    const native = rx.name === "native receiver";

    before(async () => {
      r = await startRouter();
      proxy = await startProxy(r.address);
      client = new RouterClient(proxy.address, rx.opts);
      task = await r.newTask();
      fs = new TaskFilesystem(client, task);
      dir = await mkdtemp(join(tmpdir(), "taskrouter-bulk-"));
      file = join(dir, "48MiB.bin");
      data = randomBytes(48 * MiB);
      await writeFile(file, data);
      await fs.stat(file); // the channel's own connection is up before anything is counted
    });
    after(async () => {
      client?.close();
      await proxy?.close();
      await r?.close();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it("readFile gives every byte; the next one reuses the connection", async () => {
      const opened = proxy.connections;
      assert.equal(sha(await collect(fs.readFile(file))), sha(data));
      // The native receiver dials a connection of its own; grpc-js uses its channel's.
      assert.equal(proxy.connections - opened, native ? 1 : 0);
      const open = proxy.open;
      assert.equal(sha(await collect(fs.readFile(file))), sha(data));
      assert.equal(proxy.connections - opened, native ? 1 : 0, "no new connection");
      assert.equal(await settled(() => proxy.open), open);
    });

    it("resumes across a cut connection: every byte exactly once", async () => {
      const cuts = proxy.cuts;
      const cut = proxy.cutAfter(proxy.downBytes + 20 * MiB);
      assert.equal(sha(await collect(fs.readFile(file))), sha(data));
      await cut;
      assert.ok(proxy.cuts > cuts, "the read was cut");
    });

    it("reads from an offset", async () => {
      const id = await client.start(task, ["cat", file], { stdout: "pipe" });
      await client.wait(task, id);
      const at = 17 * MiB + 3;
      const got = await collect(client.read(task, id, "stdout", { offset: at, bulk: true }));
      assert.equal(sha(got), sha(data.subarray(at)));
    });

    it("an unknown exec is NotFound", async () => {
      await assert.rejects(
        collect(client.read(task, "no-such-exec", "stdout", { bulk: true })),
        (e) => kindOf(e) === "NotFound",
      );
    });

    it("a wrong token is Unauthenticated", async () => {
      const authed = await startRouter({ auth: { mode: "jwt" } });
      const bad = new RouterClient(authed.address, { ...rx.opts, token: "not-a-token" });
      try {
        await assert.rejects(
          collect(bad.read("t", "e", "stdout", { bulk: true })),
          (e) => kindOf(e) === "Unauthenticated",
        );
      } finally {
        bad.close();
        await authed.close();
      }
    });

    it("an aborted read is Cancelled and the command keeps running", async () => {
      const id = await client.start(task, ["yes"], { stdout: "pipe" });
      try {
        const ac = new AbortController();
        let got = 0;
        await assert.rejects(
          (async () => {
            for await (const c of client.read(task, id, "stdout", {
              bulk: true,
              signal: ac.signal,
            })) {
              got += c.length;
              ac.abort();
            }
          })(),
          (e) => kindOf(e) === "Cancelled",
        );
        assert.ok(got > 0);
        assert.equal(await client.poll(task, id), undefined, "still running");
      } finally {
        await new ExecsClient(client).signal(task, id, "KILL");
        await client.wait(task, id);
      }
    });

    it("stopping early ends the call and closes its connection (never reused)", async () => {
      const id = await client.start(task, ["cat", file], { stdout: "pipe" });
      await client.wait(task, id);
      // A whole read first, so a kept connection is there for the stopped one to take.
      assert.equal(sha(await collect(client.read(task, id, "stdout", { bulk: true }))), sha(data));
      const open = await settled(() => proxy.open);
      const opened = proxy.connections;
      for await (const c of client.read(task, id, "stdout", { bulk: true })) {
        assert.ok(c.length > 0);
        break;
      }
      assert.equal(sha(await collect(client.read(task, id, "stdout", { bulk: true }))), sha(data));
      // Native: the stopped call's connection was closed, so the next read dialled anew.
      assert.equal(proxy.connections - opened, native ? 1 : 0);
      assert.equal(await settled(() => proxy.open), open);
    });

    it("a closed client refuses new reads, as a closed grpc-js channel does", async () => {
      const other = new RouterClient(proxy.address, rx.opts);
      other.close();
      await assert.rejects(
        collect(other.read(task, "any", "stdout", { bulk: true })),
        /Channel has been shut down/,
      );
    });

    it("a stalled reader holds the router back; reading on gets every byte", async () => {
      const total = 256 * MiB;
      const id = await client.start(task, ["head", "-c", String(total), "/dev/zero"], {
        stdout: "pipe",
      });
      await client.wait(task, id);
      const from = proxy.downBytes;
      const it = client.read(task, id, "stdout", { bulk: true })[Symbol.asyncIterator]();
      const first = await it.next();
      let got = first.done ? 0 : first.value.length;
      const sent = (await settled(() => proxy.downBytes)) - from;
      assert.ok(sent < total / 2, `${sent} bytes went out while the reader stalled`);
      for (let n = await it.next(); !n.done; n = await it.next()) got += n.value.length;
      assert.equal(got, total);
    });
  });
}

describe("native receiver: answers that are not gRPC map as grpc-js maps them", {
  skip: nativeSkip,
}, () => {
  let server: Http2Server;
  let reader: BulkReader;
  let answer: (s: ServerHttp2Stream) => void = () => {};

  const sockets = new Set<Socket>();

  before(async () => {
    server = createServer();
    server.on("connection", (c: Socket) => {
      sockets.add(c);
      c.on("close", () => sockets.delete(c));
    });
    server.on("stream", (s) => {
      s.on("error", () => {});
      s.resume();
      s.on("end", () => answer(s));
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const r = BulkReader.forAddress(`127.0.0.1:${(server.address() as AddressInfo).port}`);
    assert.ok(r, "the addon is built and the address is plain host:port");
    reader = r;
  });
  after(async () => {
    // The receiver keeps its idle connection (until a GOAWAY, which this server never sends).
    for (const c of sockets) c.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const codeOf = async (decode: (b: Uint8Array) => unknown = (b) => b) => {
    const call = reader.call("/m", new Metadata(), new Uint8Array(1), decode);
    try {
      for await (const _ of call) {
      }
    } catch (e) {
      return (e as { code: number }).code;
    }
    return 0;
  };

  it("an HTTP error page is its HTTP status (401: UNAUTHENTICATED), not a framing error", async () => {
    answer = (s) => {
      s.respond({ ":status": 401, "content-type": "text/html" });
      s.end("<html>login</html>");
    };
    assert.equal(await codeOf(), grpcStatus.UNAUTHENTICATED);
  });

  it("a message that does not decode is INTERNAL; a stream without a status is INTERNAL", async () => {
    answer = (s) => {
      s.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      s.on("wantTrailers", () => s.sendTrailers({ "grpc-status": "0" }));
      s.end(Buffer.from([0, 0, 0, 0, 2, 0xff, 0xff]));
    };
    assert.equal(
      await codeOf(() => {
        throw new Error("bad wire type");
      }),
      grpcStatus.INTERNAL,
    );
    answer = (s) => {
      s.respond({ ":status": 200, "content-type": "application/grpc" });
      s.end();
    };
    assert.equal(await codeOf(), grpcStatus.INTERNAL);
  });
});
