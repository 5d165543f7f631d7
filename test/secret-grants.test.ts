/**
 * Secret grants (issue 15, finding 3): a task token may use only the secrets
 * granted to its task (`task create --allow-secret`, CreateTaskRequest
 * allowed_secrets) and those of its token's `secrets` claim; admin tokens
 * (and `--auth none`) may use every secret. Anything else is
 * PERMISSION_DENIED naming the secret, and nothing starts.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { pino } from "pino";
import { issueToken } from "../src/auth/tokens.ts";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { methodsOf } from "../src/client/methods.ts";
import { SecretsClient } from "../src/client/secrets.ts";
import { DEFAULT_CONFIG, startDaemon } from "../src/daemon.ts";
import {
  TaskCommandRouter,
  TaskExecStartRequestSchema,
  TaskExecStderrConfig,
  TaskExecStdoutConfig,
} from "../src/gen/modal_proto/task_command_router_pb.ts";
import { clients, clientWith, failure, HOUR, now, sign } from "./helpers/auth-common.ts";
import { runCli } from "./helpers/cli-run.ts";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";

const MARK = `grant-${randomBytes(6).toString("hex")}`;
const router = methodsOf(TaskCommandRouter);

/** Runs `printenv NAME` in `task` through `c` with `secretIds`; resolves with its stdout. */
async function printenv(
  c: RouterClient,
  task: string,
  name: string,
  secretIds: string[],
  execId?: string,
): Promise<string> {
  const id = await c.start(task, ["printenv", name], {
    stdout: "pipe",
    secretIds,
    ...(execId ? { execId } : {}),
  });
  await c.wait(task, id);
  return (await collect(c.read(task, id, "stdout"))).toString().trim();
}

describe("secret grants (serve --auth jwt)", () => {
  let r: TestRouter;
  let t1Token: string;
  let admin: RouterClient;
  before(async () => {
    r = await startRouter({ auth: { mode: "jwt" } });
    admin = r.client;
    const secrets = new SecretsClient(admin);
    await secrets.create("mine", { MINE: `${MARK}-mine` });
    await secrets.create("other-teams-db", { DB_PASSWORD: `${MARK}-other` });
    await secrets.create("extra", { EXTRA: `${MARK}-extra` });
    await r.tasks.create("t1", { allowedSecrets: ["mine", "not-yet-created"] });
    await r.newTask("t2");
    const key = r.daemon.signingKey;
    assert.ok(key);
    t1Token = await issueToken(key, { task: "t1" }, HOUR);
  });
  afterEach(() => {
    for (const c of clients.splice(0)) c.close();
  });
  after(async () => {
    await r.close();
  });

  /** Asserts that starting exec `execId` fails with `code` and that no exec was made. */
  async function refused(p: Promise<unknown>, task: string, execId: string, code: status) {
    const err = await failure(p);
    assert.equal(err.code, code, err.message);
    assert.ok(!err.message.includes(MARK), "an error carries a secret value");
    const gone = await failure(admin.poll(task, execId));
    assert.equal(gone.code, status.NOT_FOUND, "the refused start made an exec");
    return err;
  }

  it("GetTask and ListTasks show a task's grants", async () => {
    assert.deepEqual((await r.tasks.get("t1")).allowedSecrets, ["mine", "not-yet-created"]);
    const listed = (await r.tasks.list()).find((t) => t.taskId === "t2");
    assert.deepEqual(listed?.allowedSecrets, []);
  });

  it("a task token uses the task's granted secrets, and no other", async () => {
    const c = clientWith(r, t1Token);
    assert.equal(await printenv(c, "t1", "MINE", ["mine"]), `${MARK}-mine`);
    const err = await refused(
      c.start("t1", ["true"], { execId: "steal", secretIds: ["mine", "other-teams-db"] }),
      "t1",
      "steal",
      status.PERMISSION_DENIED,
    );
    assert.match(err.message, /other-teams-db/);
    // An unknown secret that is not granted is denied too: no probing for names.
    const ghost = await refused(
      c.start("t1", ["true"], { execId: "ghost", secretIds: ["ghost"] }),
      "t1",
      "ghost",
      status.PERMISSION_DENIED,
    );
    assert.match(ghost.message, /ghost/);
    // Granted but not created yet: NOT_FOUND, as for an admin.
    await refused(
      c.start("t1", ["true"], { execId: "later", secretIds: ["not-yet-created"] }),
      "t1",
      "later",
      status.NOT_FOUND,
    );
  });

  it("secret_sources entries with a secret_id are checked the same way", async () => {
    const c = clientWith(r, t1Token);
    const req = (execId: string, secretId: string) =>
      create(TaskExecStartRequestSchema, {
        taskId: "t1",
        execId,
        commandArgs: ["true"],
        stdoutConfig: TaskExecStdoutConfig.DEVNULL,
        stderrConfig: TaskExecStderrConfig.DEVNULL,
        secretSources: [
          { source: { case: "env", value: { contents: { A: "1" } } } },
          { source: { case: "secretId", value: secretId } },
        ],
      });
    const err = await refused(
      c.unary(router("taskExecStart"), req("src-steal", "other-teams-db")),
      "t1",
      "src-steal",
      status.PERMISSION_DENIED,
    );
    assert.match(err.message, /other-teams-db/);
    await c.unary(router("taskExecStart"), req("src-ok", "mine"));
    assert.deepEqual(await c.wait("t1", "src-ok"), { code: 0 });
  });

  it("a retried identical start joins the exec", async () => {
    const c = clientWith(r, t1Token);
    const id = await c.start("t1", ["sleep", "0.2"], { execId: "retry", secretIds: ["mine"] });
    assert.equal(await c.start("t1", ["sleep", "0.2"], { execId: id, secretIds: ["mine"] }), id);
    assert.deepEqual(await c.wait("t1", id), { code: 0 });
  });

  it("admin tokens may use every secret", async () => {
    assert.equal(await printenv(admin, "t2", "DB_PASSWORD", ["other-teams-db"]), `${MARK}-other`);
  });

  it("a token's `secrets` claim grants more, for that token only", async () => {
    const key = r.daemon.signingKey;
    assert.ok(key);
    const exp = now() + 3600;
    const claimed = clientWith(
      r,
      await sign(key.privateKey, { task_id: "t1", secrets: ["extra"], exp }, key.kid),
    );
    assert.equal(await printenv(claimed, "t1", "EXTRA", ["extra", "mine"]), `${MARK}-extra`);
    await refused(
      claimed.start("t1", ["true"], { execId: "claim-other", secretIds: ["other-teams-db"] }),
      "t1",
      "claim-other",
      status.PERMISSION_DENIED,
    );
    const plain = clientWith(r, t1Token);
    await refused(
      plain.start("t1", ["true"], { execId: "claim-plain", secretIds: ["extra"] }),
      "t1",
      "claim-plain",
      status.PERMISSION_DENIED,
    );
    // A claim that is not a list of names: the token is refused.
    const bad = clientWith(
      r,
      await sign(key.privateKey, { task_id: "t1", secrets: "extra", exp }, key.kid),
    );
    const err = await failure(bad.poll("t1", "x"));
    assert.equal(err.code, status.PERMISSION_DENIED, err.message);
  });

  it("CreateTask refuses invalid secret names", async () => {
    const err = await failure(r.tasks.create("t3", { allowedSecrets: ["ok", "../etc"] }));
    assert.equal(err.code, status.INVALID_ARGUMENT, err.message);
    assert.ok(!(await r.tasks.list()).some((t) => t.taskId === "t3"), "the task was made");
  });

  it("taskrouter task create --allow-secret (repeatable)", async () => {
    const res = await runCli([
      "--server",
      r.address,
      "--token",
      r.adminToken as string,
      "task",
      "create",
      "--id",
      "t4",
      "--allow-secret",
      "mine",
      "--allow-secret",
      "extra",
    ]);
    assert.equal(res.code, 0, res.stderr);
    assert.deepEqual((await r.tasks.get("t4")).allowedSecrets, ["mine", "extra"]);
  });
});

describe("secret grants: external issuers, storage and --auth none", () => {
  it("--jwks: an external issuer's `secrets` claim grants those secrets", async () => {
    const dir = await mkdtemp(join(tmpdir(), "taskrouter-test-"));
    const issuer = await generateKeyPair("ES256", { extractable: true });
    const file = join(dir, "jwks.json");
    await writeFile(
      file,
      JSON.stringify({ keys: [{ ...(await exportJWK(issuer.publicKey)), kid: "ext" }] }),
    );
    const r = await startRouter({ auth: { mode: "jwt", jwksFile: file } });
    const mint = (claims: Record<string, unknown>) =>
      new SignJWT(claims)
        .setProtectedHeader({ alg: "ES256", kid: "ext" })
        .setExpirationTime("1h")
        .sign(issuer.privateKey);
    try {
      await new SecretsClient(r.client).create("ext-db", { EXT_DB: `${MARK}-ext` });
      await r.newTask("ext");
      const granted = new RouterClient(r.address, {
        token: await mint({ task_id: "ext", secrets: ["ext-db"] }),
      });
      const plain = new RouterClient(r.address, { token: await mint({ task_id: "ext" }) });
      try {
        assert.equal(await printenv(granted, "ext", "EXT_DB", ["ext-db"]), `${MARK}-ext`);
        const err = await failure(plain.start("ext", ["true"], { secretIds: ["ext-db"] }));
        assert.equal(err.code, status.PERMISSION_DENIED, err.message);
      } finally {
        granted.close();
        plain.close();
      }
    } finally {
      await r.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("grants survive a router restart", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "taskrouter-test-"));
    const config = {
      ...DEFAULT_CONFIG,
      listen: "127.0.0.1:0",
      dataDir,
      runtime: "host" as const,
      auth: { mode: "jwt" as const },
    };
    const log = pino({ level: "silent" });
    try {
      let d = await startDaemon(config, log);
      const key = d.signingKey;
      assert.ok(key);
      const adminToken = await issueToken(key, { admin: true }, HOUR);
      let c = new RouterClient(d.address, { token: adminToken });
      await new SecretsClient(c).create("kept", { KEPT: `${MARK}-kept` });
      await new TasksClient(c).create("tr", { allowedSecrets: ["kept"] });
      c.close();
      await d.close();
      d = await startDaemon(config, log);
      c = new RouterClient(d.address, { token: await issueToken(key, { task: "tr" }, HOUR) });
      try {
        assert.equal(await printenv(c, "tr", "KEPT", ["kept"]), `${MARK}-kept`);
      } finally {
        c.close();
        await d.close();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it("--auth none: every secret may be used", async () => {
    const r = await startRouter();
    try {
      await new SecretsClient(r.client).create("any", { ANY: `${MARK}-any` });
      await r.newTask("t");
      assert.equal(await printenv(r.client, "t", "ANY", ["any"]), `${MARK}-any`);
    } finally {
      await r.close();
    }
  });
});
