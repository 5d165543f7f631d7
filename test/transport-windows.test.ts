/**
 * The HTTP/2 receive windows the router opens (docs/DECISIONS.md,
 * "Transport"): 64 MiB for the connection, as upstream clients open, and
 * 4 MiB per stream, so what a client sends ahead of a call's handler waits in
 * at most 4 MiB of Node's read buffers per stream; over a long path (a round
 * trip of more than 4 ms) the stream windows grow to 1 GiB/s times the round
 * trip. Seen from a plain `node:http2` client: the SETTINGS the router sends
 * and the connection's WINDOW_UPDATE, directly and through a proxy that
 * delays every byte by 20 ms each way. Fails with 64 MiB stream windows (the
 * setting before stop 31) and without the widening.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { connect } from "node:http2";
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { closeChecked, MiB } from "./helpers/wire-common.ts";

/** A TCP proxy to `target` that delays every chunk by `ms` in each direction (order kept). */
async function delayProxy(
  target: string,
  ms: number,
): Promise<{ address: string; close(): Promise<void> }> {
  const i = target.lastIndexOf(":");
  const sockets = new Set<Socket>();
  const relay = (from: Socket, to: Socket) => {
    from.on("data", (chunk) => setTimeout(() => to.write(chunk), ms));
    from.on("end", () => setTimeout(() => to.end(), ms));
    from.on("error", () => to.destroy());
  };
  const server: Server = createServer((client) => {
    const upstream = netConnect(Number(target.slice(i + 1)), target.slice(0, i));
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
    }
    relay(client, upstream);
    relay(upstream, client);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as { port: number }).port;
  return {
    address: `127.0.0.1:${port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, "close");
    },
  };
}

describe("HTTP/2 receive windows", () => {
  let r: TestRouter;
  before(async () => {
    r = await startRouter();
  });
  after(() => closeChecked(r, []));

  it("4 MiB per stream, 64 MiB for the connection", async () => {
    const session = connect(`http://${r.address}`);
    session.on("error", () => {});
    try {
      const [settings] = await once(session, "remoteSettings");
      assert.equal(settings.initialWindowSize, 4 * MiB);
      // The connection window grows by a WINDOW_UPDATE on stream 0 right after the SETTINGS.
      for (let i = 0; i < 100 && (session.state.remoteWindowSize ?? 0) < 64 * MiB; i++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert.equal(session.state.remoteWindowSize, 64 * MiB);
    } finally {
      session.destroy();
    }
  });

  it("wider stream windows over a 40 ms round trip", async () => {
    const proxy = await delayProxy(r.address, 20);
    const session = connect(`http://${proxy.address}`);
    session.on("error", () => {});
    try {
      const [first] = await once(session, "remoteSettings");
      assert.equal(first.initialWindowSize, 4 * MiB);
      // The router's PING comes back after one round trip (≥ 40 ms here): then new SETTINGS.
      const [wider] = await once(session, "remoteSettings", {
        signal: AbortSignal.timeout(10_000),
      });
      assert.ok(
        wider.initialWindowSize >= 40 * MiB && wider.initialWindowSize <= 64 * MiB,
        `stream window ${wider.initialWindowSize}`,
      );
    } finally {
      session.destroy();
      await proxy.close();
    }
  });
});
