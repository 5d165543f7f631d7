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
import { after, before, describe, it } from "node:test";
import { startProxy } from "./helpers/proxy.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { closeChecked, MiB } from "./helpers/wire-common.ts";

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
    const proxy = await startProxy(r.address, { delayMs: 20 });
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
