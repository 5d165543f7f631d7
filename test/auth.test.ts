import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import {
  Client,
  credentials,
  Metadata,
  ServerCredentials,
  type ServiceError,
  status,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { type CryptoKey, exportJWK, generateKeyPair, SignJWT } from "jose";
import { pino } from "pino";
import { loadOrCreateSigningKey, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE } from "../src/auth/keys.ts";
import { issueToken } from "../src/auth/tokens.ts";
import { ownKey } from "../src/auth/trusted-keys.ts";
import { TokenVerifier } from "../src/auth/verifier.ts";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { type DaemonConfig, DEFAULT_CONFIG, startDaemon } from "../src/daemon.ts";
import { isLoopback } from "../src/edge.ts";
import { AuthServer } from "../src/server/auth.ts";
import { cliEnv, killAll, runCli, spawnCli, stopCli, waitForOutput } from "./helpers/cli-run.ts";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";

const HOUR = 3_600_000;
const NO_RETRY = { tries: 1, baseDelayMs: 1, maxDelayMs: 1 };
const clients: RouterClient[] = [];

function clientWith(r: TestRouter, token?: string): RouterClient {
  const c = new RouterClient(r.address, { ...(token ? { token } : {}), retry: NO_RETRY });
  clients.push(c);
  return c;
}

/** The error a promise rejects with (fails the test when it resolves). */
async function failure(p: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await p;
  } catch (err) {
    return err as { code: number; message: string };
  }
  assert.fail("the call succeeded");
}

/** A token signed with `key` (ES256) carrying exactly `claims`. */
function sign(key: CryptoKey, claims: Record<string, unknown>, kid = "k"): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid }).sign(key);
}
const now = () => Math.floor(Date.now() / 1000);

/** One unary call with raw metadata (for authorization headers the client would never send). */
function rawUnary(address: string, path: string, md: Metadata): Promise<Buffer> {
  const c = new Client(address, credentials.createInsecure());
  return new Promise<Buffer>((resolve, reject) => {
    c.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.alloc(0),
      md,
      (err: ServiceError | null, res?: Buffer) => (err ? reject(err) : resolve(res as Buffer)),
    );
  }).finally(() => c.close());
}

describe("authentication (serve --auth jwt)", () => {
  let r: TestRouter;
  let marker: string;
  before(async () => {
    r = await startRouter({ runtime: "host", auth: { mode: "jwt" } });
    await r.newTask("t1");
    await r.newTask("t2");
    marker = join(r.dataDir, "ran");
  });
  after(async () => {
    for (const c of clients.splice(0)) c.close();
    await r.close();
  });
  afterEach(async () => {
    assert.equal(existsSync(marker), false, "a refused start ran its command");
  });

  const key = () => {
    const k = r.daemon.signingKey;
    assert.ok(k);
    return k;
  };

  /** Asserts a refused start on t1 (exec id `id`) with code `code` that ran nothing. */
  async function refusedStart(c: RouterClient, code: status, id: string) {
    const err = await failure(c.start("t1", ["touch", marker], { execId: id }));
    assert.equal(err.code, code, err.message);
    const gone = await failure(clientWith(r, r.adminToken).poll("t1", id));
    assert.equal(gone.code, status.NOT_FOUND, "the refused start created an exec");
    return err;
  }

  it("creates the signing key pair in <data-dir>/auth, private key 0600", async () => {
    const st = await stat(join(r.dataDir, "auth", PRIVATE_KEY_FILE));
    assert.equal(st.mode & 0o777, 0o600);
    assert.ok(existsSync(join(r.dataDir, "auth", PUBLIC_KEY_FILE)));
  });

  it("a task token runs commands in its task", async () => {
    const c = clientWith(r, await issueToken(key(), { task: "t1" }, HOUR));
    const id = await c.start("t1", ["echo", "hello"], { stdout: "pipe" });
    assert.deepEqual(await c.wait("t1", id), { code: 0 });
    assert.equal((await collect(c.read("t1", id, "stdout"))).toString(), "hello\n");
  });

  it("missing token: UNAUTHENTICATED before any work", async () => {
    await refusedStart(clientWith(r), status.UNAUTHENTICATED, "missing");
  });

  it("malformed tokens and authorization headers: UNAUTHENTICATED", async () => {
    for (const [i, bad] of ["not-a-jwt", "a.b.c", "eyJhbGciOiJFUzI1NiJ9.e30."].entries()) {
      const err = await refusedStart(clientWith(r, bad), status.UNAUTHENTICATED, `malformed${i}`);
      assert.ok(!err.message.includes(bad), "the error echoes the token");
    }
    const token = await issueToken(key(), { task: "t1" }, HOUR);
    for (const header of [`Basic ${token}`, token, "Bearer", `Bearer ${token} extra`]) {
      const md = new Metadata();
      md.set("authorization", header);
      const path = "/modal.task_command_router.TaskCommandRouter/TaskExecPoll";
      const err = (await failure(rawUnary(r.address, path, md))) as ServiceError;
      assert.equal(err.code, status.UNAUTHENTICATED, header);
      assert.ok(!err.details.includes(token.split(".")[2] as string), "the error echoes the token");
    }
  });

  it("expired token: UNAUTHENTICATED", async () => {
    const token = await sign(key().privateKey, { task_id: "t1", exp: now() - 3600 }, key().kid);
    const err = await refusedStart(clientWith(r, token), status.UNAUTHENTICATED, "expired");
    assert.match(err.message, /expired/);
    assert.ok(!err.message.includes(token));
  });

  it("token without exp: UNAUTHENTICATED", async () => {
    const token = await sign(key().privateKey, { task_id: "t1" }, key().kid);
    await refusedStart(clientWith(r, token), status.UNAUTHENTICATED, "noexp");
  });

  it("token signed by another key: UNAUTHENTICATED", async () => {
    const other = await generateKeyPair("ES256");
    const token = await sign(other.privateKey, { task_id: "t1", exp: now() + 3600 }, key().kid);
    const err = await refusedStart(clientWith(r, token), status.UNAUTHENTICATED, "wrongkey");
    assert.ok(!err.message.includes(token));
  });

  it("token for another task: PERMISSION_DENIED on every TaskCommandRouter call", async () => {
    const own = clientWith(r, await issueToken(key(), { task: "t1" }, HOUR));
    const id = await own.start("t1", ["cat"], { stdout: "pipe" });
    const token = await issueToken(key(), { task: "t2" }, HOUR);
    const other = clientWith(r, token);
    await refusedStart(other, status.PERMISSION_DENIED, "wrongtask");
    const calls: Promise<unknown>[] = [
      other.poll("t1", id),
      other.writeStdin("t1", id, 0, Buffer.from("x")),
      collect(other.read("t1", id, "stdout")),
      other.wait("t1", id),
    ];
    for (const p of calls) {
      const err = await failure(p);
      assert.equal(err.code, status.PERMISSION_DENIED, err.message);
      assert.ok(!err.message.includes(token));
    }
    await own.writeStdin("t1", id, 0, Buffer.from("ok"), true);
    assert.deepEqual(await own.wait("t1", id), { code: 0 });
    assert.equal((await collect(own.read("t1", id, "stdout"))).toString(), "ok");
  });

  it("a stream read without a token: UNAUTHENTICATED", async () => {
    const err = await failure(collect(clientWith(r).read("t1", "any", "stdout")));
    assert.equal(err.code, status.UNAUTHENTICATED);
  });

  it("a valid token granting neither a task nor admin: PERMISSION_DENIED", async () => {
    const token = await sign(key().privateKey, { sub: "t1", exp: now() + 3600 }, key().kid);
    await refusedStart(clientWith(r, token), status.PERMISSION_DENIED, "noclaim");
  });

  it("admin services need an admin token; admin tokens reach every task", async () => {
    const none = await failure(new TasksClient(clientWith(r)).list());
    assert.equal(none.code, status.UNAUTHENTICATED);
    const taskToken = await issueToken(key(), { task: "t1" }, HOUR);
    const denied = await failure(new TasksClient(clientWith(r, taskToken)).create("t3"));
    assert.equal(denied.code, status.PERMISSION_DENIED);
    await assert.rejects(new TasksClient(clientWith(r, r.adminToken)).get("t3"), {
      kind: "NotFound",
    });
    const admin = clientWith(r, await issueToken(key(), { admin: true }, HOUR));
    const ids = (await new TasksClient(admin).list()).map((t) => t.taskId).sort();
    assert.deepEqual(ids, ["t1", "t2"]);
    const id = await admin.start("t2", ["true"]);
    assert.deepEqual(await admin.wait("t2", id), { code: 0 });
  });

  it("the health service needs no token", async () => {
    const res = await rawUnary(r.address, "/grpc.health.v1.Health/Check", new Metadata());
    assert.deepEqual([...res], [0x08, 0x01]); // status: SERVING
  });
});

describe("external token issuers", () => {
  const dirs: string[] = [];
  const routers: TestRouter[] = [];
  after(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const r of routers) await r.close();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  async function tmp(): Promise<string> {
    const d = await mkdtemp(join(tmpdir(), "taskrouter-keys-"));
    dirs.push(d);
    return d;
  }

  it("--jwt-public-key: tokens of that key (RS256) are accepted, others are not", async () => {
    const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const file = join(await tmp(), "issuer.pem");
    await writeFile(file, publicKey.export({ type: "spki", format: "pem" }));
    const r = await startRouter({ runtime: "host", auth: { mode: "jwt", publicKeyFile: file } });
    routers.push(r);
    await r.newTask("ext");
    const token = await new SignJWT({ task_id: "ext" })
      .setProtectedHeader({ alg: "RS256" })
      .setExpirationTime("1h")
      .sign(privateKey);
    const c = clientWith(r, token);
    const id = await c.start("ext", ["true"]);
    assert.deepEqual(await c.wait("ext", id), { code: 0 });
    const stranger = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
    const forged = await new SignJWT({ task_id: "ext" })
      .setProtectedHeader({ alg: "RS256" })
      .setExpirationTime("1h")
      .sign(stranger);
    const err = await failure(clientWith(r, forged).start("ext", ["true"]));
    assert.equal(err.code, status.UNAUTHENTICATED);
  });

  it("--jwks: a token is checked against the key its kid names (or any key without kid)", async () => {
    const a = await generateKeyPair("ES384", { extractable: true });
    const b = await generateKeyPair("ES384", { extractable: true });
    const jwks = {
      keys: [
        { ...(await exportJWK(a.publicKey)), kid: "a", alg: "ES384" },
        { ...(await exportJWK(b.publicKey)), kid: "b", alg: "ES384" },
      ],
    };
    const file = join(await tmp(), "jwks.json");
    await writeFile(file, JSON.stringify(jwks));
    const r = await startRouter({
      runtime: "host",
      auth: { mode: "jwt", jwksFile: file, audience: "routers" },
    });
    routers.push(r);
    await r.newTask("ext");
    const mint = (key: CryptoKey, header: { kid?: string }, aud?: string) => {
      const jwt = new SignJWT({ task_id: "ext" })
        .setProtectedHeader({ alg: "ES384", ...header })
        .setExpirationTime("1h");
      if (aud) jwt.setAudience(aud);
      return jwt.sign(key);
    };
    for (const token of [
      await mint(a.privateKey, { kid: "a" }, "routers"),
      await mint(b.privateKey, {}, "routers"),
    ]) {
      const c = clientWith(r, token);
      const id = await c.start("ext", ["true"]);
      assert.deepEqual(await c.wait("ext", id), { code: 0 });
    }
    for (const token of [
      await mint(a.privateKey, { kid: "b" }, "routers"), // wrong kid
      await mint(a.privateKey, { kid: "a" }), // no aud
      await mint(a.privateKey, { kid: "a" }, "others"), // other aud
    ]) {
      const err = await failure(clientWith(r, token).start("ext", ["true"]));
      assert.equal(err.code, status.UNAUTHENTICATED, err.message);
    }
    // The router's own tokens need the audience too.
    const k = r.daemon.signingKey;
    assert.ok(k);
    const own = await issueToken(k, { task: "ext" }, HOUR, { audience: "routers" });
    const c = clientWith(r, own);
    assert.deepEqual(await c.wait("ext", await c.start("ext", ["true"])), { code: 0 });
  });
});

describe("--auth none", () => {
  it("is refused on a non-loopback listen address, before anything is served", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "taskrouter-test-"));
    try {
      await assert.rejects(
        startDaemon(
          {
            ...DEFAULT_CONFIG,
            runtime: "host",
            listen: "0.0.0.0:0",
            dataDir,
            auth: { mode: "none" },
          },
          pino({ level: "silent" }),
        ),
        { kind: "InvalidArgument", message: /--auth none is only allowed on a loopback/ },
      );
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it("knows loopback addresses", () => {
    for (const a of ["127.0.0.1:1", "127.1.2.3:1", "[::1]:1", "localhost:1", ":7878"]) {
      assert.equal(isLoopback(a), true, a);
    }
    for (const a of ["0.0.0.0:1", "[::]:1", "10.0.0.1:1", "example.com:1", "[::2]:1"]) {
      assert.equal(isLoopback(a), false, a);
    }
  });
});

describe("tokens and logs", () => {
  it("neither errors nor the server's log (at trace level) contain a token", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "taskrouter-test-"));
    const lines: string[] = [];
    const log = pino({ level: "trace" }, { write: (s: string) => void lines.push(s) });
    const daemon = await startDaemon(
      { ...DEFAULT_CONFIG, runtime: "host", listen: "127.0.0.1:0", dataDir, auth: { mode: "jwt" } },
      log,
    );
    const c = new RouterClient(daemon.address, { retry: NO_RETRY });
    try {
      await daemon.tasks.create("t1");
      const k = daemon.signingKey;
      assert.ok(k);
      const tokens = [
        await issueToken(k, { task: "t2" }, HOUR),
        await sign(k.privateKey, { task_id: "t1", exp: now() - 3600 }, k.kid),
        "eyJhbGciOiJFUzI1NiJ9.eyJ0YXNrX2lkIjoidDEifQ.c2lnbmF0dXJl",
      ];
      for (const token of tokens) {
        const tc = new RouterClient(daemon.address, { token, retry: NO_RETRY });
        const err = await failure(tc.start("t1", ["true"]));
        tc.close();
        assert.ok(err.code === status.UNAUTHENTICATED || err.code === status.PERMISSION_DENIED);
        const sig = token.split(".")[2] as string;
        assert.ok(!err.message.includes(sig), "error echoes the token");
        assert.ok(!lines.join("").includes(sig), "log contains the token");
      }
      assert.ok(
        lines.some((l) => l.includes("denied")),
        "denials are logged",
      );
    } finally {
      c.close();
      await daemon.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it("the signing key survives a restart: tokens stay valid", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "taskrouter-test-"));
    const cfg: DaemonConfig = {
      ...DEFAULT_CONFIG,
      runtime: "host",
      listen: "127.0.0.1:0",
      dataDir,
    };
    try {
      const d1 = await startDaemon(cfg, pino({ level: "silent" }));
      assert.ok(d1.signingKey);
      const token = await issueToken(d1.signingKey, { admin: true }, HOUR);
      await d1.close();
      const d2 = await startDaemon(cfg, pino({ level: "silent" }));
      const c = new RouterClient(d2.address, { token, retry: NO_RETRY });
      try {
        assert.deepEqual(await new TasksClient(c).list(), []);
      } finally {
        c.close();
        await d2.close();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("CLI: token issue, --token, TASKROUTER_TOKEN, serve --demo/--auth", () => {
  let r: TestRouter;
  const dirs: string[] = [];
  before(async () => {
    r = await startRouter({ runtime: "host", auth: { mode: "jwt" } });
    await r.newTask("t1");
  });
  after(async () => {
    await killAll();
    await r.close();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it("token issue --task / --admin mint tokens the router accepts", async () => {
    const issued = await runCli(["token", "issue", "--task", "t1", "--data-dir", r.dataDir]);
    assert.equal(issued.code, 0, issued.stderr);
    const token = issued.stdout.trim();
    assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
    const viaEnv = await runCli(
      ["--server", r.address, "exec", "t1", "--", "echo", "hi"],
      cliEnv({ TASKROUTER_TOKEN: token }),
    );
    assert.deepEqual([viaEnv.code, viaEnv.stdout, viaEnv.stderr], [0, "hi\n", ""]);
    const denied = await runCli(["--server", r.address, "--token", token, "task", "ls"]);
    assert.equal(denied.code, 125);
    assert.match(denied.stderr, /PermissionDenied/);
    assert.ok(!denied.stderr.includes(token));
    const admin = await runCli([
      "token",
      "issue",
      "--admin",
      "--ttl",
      "5m",
      "--data-dir",
      r.dataDir,
    ]);
    assert.equal(admin.code, 0, admin.stderr);
    const ls = await runCli([
      "--server",
      r.address,
      "--token",
      admin.stdout.trim(),
      "task",
      "ls",
      "-q",
    ]);
    assert.deepEqual([ls.code, ls.stdout], [0, "t1\n"]);
  });

  it("client verbs without a token fail with Unauthenticated (exit 125)", async () => {
    const res = await runCli(["--server", r.address, "exec", "t1", "--", "true"]);
    assert.equal(res.code, 125);
    assert.match(res.stderr, /Unauthenticated/);
  });

  it("token issue refuses a data dir without a key, and needs --task or --admin", async () => {
    const empty = await mkdtemp(join(tmpdir(), "taskrouter-test-"));
    dirs.push(empty);
    const nokey = await runCli(["token", "issue", "--admin", "--data-dir", empty]);
    assert.equal(nokey.code, 125);
    assert.match(nokey.stderr, /no signing key/);
    const neither = await runCli(["token", "issue", "--data-dir", r.dataDir]);
    assert.equal(neither.code, 125);
    assert.match(neither.stderr, /exactly one of --task ID and --admin/);
  });

  it("serve --demo prints a ready-to-paste exec line with a token", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "taskrouter-test-"));
    dirs.push(dataDir);
    const serve = spawnCli([
      "serve",
      "--runtime",
      "host",
      "--demo",
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      dataDir,
    ]);
    const m = await waitForOutput(
      serve,
      /\n {2}TASKROUTER_TOKEN=(\S+) npx taskrouter --server (\S+) exec demo -- uname -a\n/,
    );
    const res = await runCli(
      ["--server", m[2] as string, "exec", "demo", "--", "uname", "-s"],
      cliEnv({ TASKROUTER_TOKEN: m[1] as string }),
    );
    assert.deepEqual([res.code, res.stdout], [0, "Linux\n"]);
    await stopCli(serve);
  });

  it("serve --auth none: refused on 0.0.0.0, a warning on loopback", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "taskrouter-test-"));
    dirs.push(dataDir);
    const refused = await runCli([
      "serve",
      "--auth",
      "none",
      "--listen",
      "0.0.0.0:0",
      "--data-dir",
      dataDir,
    ]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /--auth none is only allowed on a loopback listen address/);
    const serve = spawnCli([
      "serve",
      "--auth",
      "none",
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      dataDir,
    ]);
    await Promise.all([
      waitForOutput(serve, /listening on 127\.0\.0\.1:\d+/),
      waitForOutput(serve, /taskrouter: WARNING: authentication is off/, "stderr"),
    ]);
    await stopCli(serve);
  });
});

describe("AuthServer", () => {
  it("guards unary, server-, client- and bidi-streaming calls; unknown services need admin", async () => {
    const dir = await mkdtemp(join(tmpdir(), "taskrouter-test-"));
    const key = await loadOrCreateSigningKey(dir);
    const server = new AuthServer(
      new TokenVerifier({ keys: [ownKey(key)] }),
      pino({ level: "silent" }),
    );
    const raw = (b: Buffer) => b;
    const method = (name: string, requestStream: boolean, responseStream: boolean) => ({
      path: `/test.v1.Probe/${name}`,
      requestStream,
      responseStream,
      requestSerialize: raw,
      requestDeserialize: raw,
      responseSerialize: raw,
      responseDeserialize: raw,
    });
    let handled = 0;
    server.addService(
      {
        unary: method("Unary", false, false),
        serverStream: method("ServerStream", false, true),
        clientStream: method("ClientStream", true, false),
        bidi: method("Bidi", true, true),
      },
      {
        unary: (_call: unknown, cb: (e: null, r: Buffer) => void) => {
          handled++;
          cb(null, Buffer.from("u"));
        },
        serverStream: (call: { write(b: Buffer): void; end(): void }) => {
          handled++;
          call.write(Buffer.from("s"));
          call.end();
        },
        clientStream: (call: NodeJS.EventEmitter, cb: (e: null, r: Buffer) => void) => {
          handled++;
          const parts: Buffer[] = [];
          call.on("data", (b: Buffer) => parts.push(b));
          call.on("end", () => cb(null, Buffer.concat(parts)));
        },
        bidi: (call: NodeJS.EventEmitter & { write(b: Buffer): void; end(): void }) => {
          handled++;
          call.on("data", (b: Buffer) => call.write(b));
          call.on("end", () => call.end());
        },
      } as unknown as UntypedServiceImplementation,
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    const c = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
    const md = (token?: string) => {
      const m = new Metadata();
      if (token) m.set("authorization", `Bearer ${token}`);
      return m;
    };
    /** Runs all four calls with `token`; returns their codes (0 = OK) and the bytes received. */
    const all = async (token?: string) => {
      const unary = new Promise<[number, string]>((resolve) => {
        c.makeUnaryRequest("/test.v1.Probe/Unary", raw, raw, Buffer.from("x"), md(token), (e, r) =>
          resolve(e ? [e.code, ""] : [0, String(r)]),
        );
      });
      const stream = async (call: AsyncIterable<Buffer>): Promise<[number, string]> => {
        let got = "";
        try {
          for await (const b of call) got += b.toString();
          return [0, got];
        } catch (e) {
          return [(e as ServiceError).code, got];
        }
      };
      const ss = stream(
        c.makeServerStreamRequest(
          "/test.v1.Probe/ServerStream",
          raw,
          raw,
          Buffer.from("x"),
          md(token),
        ),
      );
      const cs = new Promise<[number, string]>((resolve) => {
        const call = c.makeClientStreamRequest(
          "/test.v1.Probe/ClientStream",
          raw,
          raw,
          md(token),
          (e, r) => resolve(e ? [e.code, ""] : [0, String(r)]),
        );
        call.write(Buffer.from("c1"));
        call.end(Buffer.from("c2"));
      });
      const bidiCall = c.makeBidiStreamRequest("/test.v1.Probe/Bidi", raw, raw, md(token));
      bidiCall.write(Buffer.from("b1"));
      bidiCall.end();
      const bd = stream(bidiCall);
      return Promise.all([unary, ss, cs, bd]);
    };
    try {
      const U = status.UNAUTHENTICATED;
      const P = status.PERMISSION_DENIED;
      assert.deepEqual(await all(), [
        [U, ""],
        [U, ""],
        [U, ""],
        [U, ""],
      ]);
      assert.deepEqual(await all(await issueToken(key, { task: "t" }, HOUR)), [
        [P, ""],
        [P, ""],
        [P, ""],
        [P, ""],
      ]);
      assert.equal(handled, 0, "a handler ran for a refused call");
      const admin = await issueToken(key, { admin: true }, HOUR);
      assert.deepEqual(await all(admin), [
        [0, "u"],
        [0, "s"],
        [0, "c1c2"],
        [0, "b1"],
      ]);
      assert.equal(handled, 4);
    } finally {
      c.close();
      server.forceShutdown();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
