import assert from "node:assert/strict";
import { randomBytes, X509Certificate } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { credentials, status } from "@grpc/grpc-js";
import { RouterClient } from "../src/client/client.ts";
import { routeByFirstByte } from "../src/server/transport/first-byte.ts";
import { ensureSelfSigned, selfSignedCertificate } from "../src/tls/certs.ts";
import { cliEnv, killAll, runCli } from "./helpers/cli-run.ts";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";

const NO_RETRY = { tries: 1, baseDelayMs: 1, maxDelayMs: 1 };

describe("first-byte routing", () => {
  it("hands over the socket with every byte, the sniffed ones included", async () => {
    const routed: number[] = [];
    const received: Promise<Buffer>[] = [];
    const server = createServer((socket: Socket) => {
      routeByFirstByte(socket, 5_000, (first) => {
        routed.push(first);
        // The next owner reads the socket from the start.
        received.push(
          (async () => {
            const parts: Buffer[] = [];
            for await (const c of socket) parts.push(c as Buffer);
            return Buffer.concat(parts);
          })(),
        );
      });
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as { port: number };
    try {
      const sent = [Buffer.from([0x16, 3, 1]), randomBytes(100_000), Buffer.from("tail")];
      const c = connect(port, "127.0.0.1");
      await once(c, "connect");
      for (const part of sent) {
        c.write(part);
        await new Promise((r) => setTimeout(r, 20));
      }
      c.end();
      while (received.length === 0) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(routed, [0x16]);
      assert.ok((await received[0])?.equals(Buffer.concat(sent)), "bytes were lost or reordered");
    } finally {
      server.close();
    }
  });

  it("closes a connection that ends before sending anything, without routing it", async () => {
    let routed = 0;
    const server = createServer((s: Socket) => routeByFirstByte(s, 5_000, () => routed++));
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as { port: number };
    try {
      const c = connect(port, "127.0.0.1");
      await once(c, "connect");
      c.end();
      await once(c, "close");
      assert.equal(routed, 0);
    } finally {
      server.close();
    }
  });
});

describe("TLS and cleartext on one port (--tls-self-signed)", () => {
  let r: TestRouter;
  let ca: Buffer;
  const clients: RouterClient[] = [];
  const tlsClient = (opts: { ca?: Buffer | null; insecure?: boolean } = {}) => {
    const creds = credentials.createSsl(
      opts.ca === undefined ? ca : opts.ca,
      null,
      null,
      opts.insecure ? { rejectUnauthorized: false } : {},
    );
    const c = new RouterClient(r.address, {
      credentials: creds,
      retry: NO_RETRY,
      ...(r.adminToken ? { token: r.adminToken } : {}),
    });
    clients.push(c);
    return c;
  };
  before(async () => {
    r = await startRouter({ runtime: "host", auth: { mode: "jwt" }, tls: { selfSigned: true } });
    await r.newTask("t1");
    assert.ok(r.daemon.tlsCertFile);
    ca = await readFile(r.daemon.tlsCertFile);
  });
  after(async () => {
    for (const c of clients) c.close();
    await killAll();
    await r.close();
  });

  /** Runs `cat` with `input` through client `c` and returns its stdout. */
  async function echo(c: RouterClient, input: Buffer): Promise<Buffer> {
    const id = await c.start("t1", ["cat"], { stdout: "pipe" });
    await c.writeStdin("t1", id, 0, input, true);
    const out = await collect(c.read("t1", id, "stdout"));
    assert.deepEqual(await c.wait("t1", id), { code: 0 });
    return out;
  }

  it("stores a development certificate for localhost and 127.0.0.1 (key 0600)", async () => {
    const x = new X509Certificate(ca);
    assert.equal(x.checkIP("127.0.0.1"), "127.0.0.1");
    assert.equal(x.checkHost("localhost"), "localhost");
    assert.equal(x.verify(x.publicKey), true, "not self-signed");
    const st = await stat(join(r.dataDir, "tls", "self-signed.key"));
    assert.equal(st.mode & 0o777, 0o600);
  });

  it("a TLS client and a cleartext client on the same port both succeed", async () => {
    const data = randomBytes(3 * 1024 * 1024);
    const tls = tlsClient();
    const [overTls, overH2c] = await Promise.all([echo(tls, data), echo(r.client, data)]);
    assert.ok(overTls.equals(data), "TLS output differs");
    assert.ok(overH2c.equals(data), "cleartext output differs");
  });

  it("the TLS client really checks the certificate", async () => {
    const { cert } = selfSignedCertificate(["localhost"], ["127.0.0.1"]);
    const err = await tlsClient({ ca: cert })
      .start("t1", ["true"])
      .then(
        () => assert.fail("connected with an untrusted certificate"),
        (e: { code: number }) => e,
      );
    assert.equal(err.code, status.UNAVAILABLE);
    const ok = await echo(tlsClient({ ca: null, insecure: true }), Buffer.from("x"));
    assert.equal(ok.toString(), "x");
  });

  it("CLI: --tls-ca and --tls-insecure connect over TLS; plain --tls does not trust the dev cert", async () => {
    const env = cliEnv({ TASKROUTER_TOKEN: r.adminToken ?? "" });
    const certFile = r.daemon.tlsCertFile as string;
    for (const flags of [
      ["--tls-ca", certFile],
      ["--tls", "--tls-insecure"],
    ]) {
      const res = await runCli(
        ["--server", r.address, ...flags, "exec", "t1", "--", "echo", "ok"],
        env,
      );
      assert.deepEqual([res.code, res.stdout], [0, "ok\n"], res.stderr);
    }
    const untrusted = await runCli(
      ["--server", r.address, "--tls", "exec", "t1", "--", "true"],
      env,
    );
    assert.equal(untrusted.code, 125);
  });
});

describe("ensureSelfSigned", () => {
  it("reuses the stored certificate, and makes a new one when a name is missing", async () => {
    const dir = await mkdtemp(join(tmpdir(), "taskrouter-tls-"));
    try {
      const first = await ensureSelfSigned(dir);
      const again = await ensureSelfSigned(dir);
      assert.ok(again.cert.equals(first.cert), "not reused");
      const wider = await ensureSelfSigned(dir, ["10.9.8.7"]);
      assert.ok(!wider.cert.equals(first.cert), "not renewed for a new name");
      assert.equal(new X509Certificate(wider.cert).checkIP("10.9.8.7"), "10.9.8.7");
      assert.ok((await readFile(join(dir, "self-signed.crt"))).equals(wider.cert));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("--tls-cert / --tls-key", () => {
  it("serves the given certificate; a key of another certificate is refused", async () => {
    const { cert, key } = selfSignedCertificate(["localhost"], ["127.0.0.1"]);
    const other = selfSignedCertificate(["localhost"], ["127.0.0.1"]);
    const dir = await mkdtemp(join(tmpdir(), "taskrouter-tls-"));
    const certFile = join(dir, "server.crt");
    const keyFile = join(dir, "server.key");
    const otherKey = join(dir, "other.key");
    await writeFile(certFile, cert);
    await writeFile(keyFile, key, { mode: 0o600 });
    await writeFile(otherKey, other.key, { mode: 0o600 });
    try {
      const r = await startRouter({ runtime: "host", tls: { certFile, keyFile } });
      try {
        await r.newTask("t1");
        const c = new RouterClient(r.address, {
          credentials: credentials.createSsl(cert),
          retry: NO_RETRY,
        });
        const id = await c.start("t1", ["true"]);
        assert.deepEqual(await c.wait("t1", id), { code: 0 });
        c.close();
      } finally {
        await r.close();
      }
      await assert.rejects(startRouter({ runtime: "host", tls: { certFile, keyFile: otherKey } }), {
        kind: "InvalidArgument",
        message: /does not belong to --tls-cert/,
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
