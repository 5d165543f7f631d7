/**
 * Authentication (serve --auth jwt): tokens on every RPC, task and admin scopes, and
 * tokens kept out of errors and logs. Shared helpers: test/helpers/auth-common.ts.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { Client, credentials, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { generateKeyPair } from "jose";
import { pino } from "pino";
import { PRIVATE_KEY_FILE, PUBLIC_KEY_FILE } from "../src/auth/keys.ts";
import { issueToken } from "../src/auth/tokens.ts";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { type DaemonConfig, DEFAULT_CONFIG, startDaemon } from "../src/daemon.ts";
import { clients, clientWith, failure, HOUR, NO_RETRY, now, sign } from "./helpers/auth-common.ts";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";

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
      let token: string;
      try {
        assert.ok(d1.signingKey);
        token = await issueToken(d1.signingKey, { admin: true }, HOUR);
      } finally {
        await d1.close();
      }
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

describe("a task token and a task id used again (serve --auth jwt)", () => {
  let r: TestRouter;
  before(async () => {
    r = await startRouter({ runtime: "host", auth: { mode: "jwt" } });
  });
  after(async () => {
    for (const c of clients.splice(0)) c.close();
    await r.close();
  });

  it("a token issued before its task was created (beyond 30 s of skew) does not reach it", async () => {
    const key = r.daemon.signingKey;
    assert.ok(key);
    const admin = new TasksClient(clientWith(r, r.adminToken));
    await admin.create("again");
    await admin.terminate("again");
    await admin.create("again");
    const token = (claims: Record<string, unknown>) =>
      sign(key.privateKey, { task_id: "again", exp: now() + 3600, ...claims }, key.kid);
    // Issued 40 s before this task existed: a token of the earlier task of that id.
    const stale = clientWith(r, await token({ iat: now() - 40 }));
    const err = await failure(stale.start("again", ["true"], { execId: "stale" }));
    assert.equal(err.code, status.PERMISSION_DENIED, err.message);
    assert.match(err.message, /issued before task "again" was created/);
    const gone = await failure(clientWith(r, r.adminToken).poll("again", "stale"));
    assert.equal(gone.code, status.NOT_FOUND, "the refused start created an exec");
    // Issued after it, within the skew allowed (an issuer's clock 10 s behind), or without `iat`.
    for (const t of [
      await issueToken(key, { task: "again" }, HOUR),
      await token({ iat: now() - 10 }),
      await token({}),
    ]) {
      const c = clientWith(r, t);
      const ok = await c.start("again", ["true"]);
      assert.deepEqual(await c.wait("again", ok), { code: 0 });
    }
  });
});
