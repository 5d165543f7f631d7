import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createPrivateKey, randomBytes, sign, X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { ImagesAdminClient, TaskImagesClient } from "../src/client/images.ts";
import { makeTree, rejectsKind, taskScratch } from "./helpers/images.ts";
import { registrySkipReason, startRegistry, type TestRegistry } from "./helpers/registry.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { readTree } from "./helpers/tree.ts";

const run = promisify(execFile);
const skip = registrySkipReason({ htpasswd: true });
const REPO = "private/images";
const RETRY = { attempts: 3, firstDelayMs: 50, maxDelayMs: 200 };

/** A docker config.json with `user:password` for `host`. */
async function authFile(dir: string, name: string, host: string, user: string, pass: string) {
  const file = join(dir, name);
  const auth = Buffer.from(`${user}:${pass}`).toString("base64");
  await writeFile(file, JSON.stringify({ auths: { [host]: { auth } } }), { mode: 0o600 });
  return file;
}

describe("a registry with basic auth (htpasswd)", { skip }, () => {
  let dir: string;
  let reg: TestRegistry;
  let a: TestRouter;
  let b: TestRouter;
  let anon: TestRouter;
  let wrong: TestRouter;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskrouter-reg-auth-"));
    const htpasswd = join(dir, "htpasswd");
    // bcrypt, as the registry requires (-B).
    const { stdout } = await run("htpasswd", ["-Bbn", "alice", "s3cret"]);
    await writeFile(htpasswd, stdout);
    reg = await startRegistry({ htpasswd });
    const ref = `${reg.host}/${REPO}`;
    const good = await authFile(dir, "good.json", reg.host, "alice", "s3cret");
    const bad = await authFile(dir, "bad.json", reg.host, "alice", "wrong");
    a = await startRouter({ registry: { ref, insecure: true, authFile: good, retry: RETRY } });
    b = await startRouter({ registry: { ref, insecure: true, authFile: good, retry: RETRY } });
    anon = await startRouter({ registry: { ref, insecure: true, retry: RETRY } });
    wrong = await startRouter({ registry: { ref, insecure: true, authFile: bad, retry: RETRY } });
  });
  after(async () => {
    for (const r of [wrong, anon, b, a]) await r?.close();
    await reg?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("routers with credentials push and pull; without or with wrong ones they are refused", async () => {
    const task = await a.newTask();
    const s = await taskScratch(a.dataDir, task);
    const taskB = await b.newTask();
    const sb = await taskScratch(b.dataDir, taskB);
    try {
      await makeTree(join(s.dir, "src"));
      const image = await new TaskImagesClient(a.client).snapshotDirectory(
        task,
        join(s.dir, "src"),
      );
      const r = await new ImagesAdminClient(a.client).push(image);
      assert.equal(r.reference, `${reg.host}/${REPO}:${image}`);
      const imgB = new TaskImagesClient(b.client);
      await imgB.mount(taskB, join(sb.dir, "mnt"), image);
      try {
        assert.deepEqual(
          await readTree(join(sb.dir, "mnt"), { withTimes: true }),
          await readTree(join(s.dir, "src"), { withTimes: true }),
        );
      } finally {
        await imgB.unmount(taskB, join(sb.dir, "mnt"));
      }
      await rejectsKind(
        () => new ImagesAdminClient(anon.client).pull(image),
        "FailedPrecondition",
        /--registry-auth/,
      );
      await rejectsKind(
        () => new ImagesAdminClient(wrong.client).pull(image),
        "PermissionDenied",
        /credentials refused/,
      );
    } finally {
      await sb.cleanup();
      await s.cleanup();
    }
  });
});

const b64url = (b: Buffer | string) => Buffer.from(b).toString("base64url");

/**
 * A token service as the distribution spec's bearer flow has it (what
 * docker_auth or Harbor's core run): GET /token?service=&scope= with basic
 * credentials answers {"token": JWT} signed ES256 by a certificate the
 * registry trusts (x5c). It grants the scope's actions to alice only.
 */
async function startTokenService(dir: string) {
  const key = join(dir, "token.key");
  const cert = join(dir, "token.pem");
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    key,
    "-out",
    cert,
    "-days",
    "2",
    "-subj",
    "/CN=taskrouter-test-token-issuer",
  ]);
  const priv = createPrivateKey(await readFile(key));
  const der = new X509Certificate(await readFile(cert)).raw;
  let requests = 0;
  const srv = createServer((req, res) => {
    requests++;
    const url = new URL(req.url ?? "/", "http://x");
    const basic = `Basic ${Buffer.from("alice:s3cret").toString("base64")}`;
    if (url.pathname !== "/token" || req.headers.authorization !== basic) {
      res.writeHead(401).end();
      return;
    }
    const [type, name, actions] = (url.searchParams.get("scope") ?? "").split(":");
    const now = Math.floor(Date.now() / 1000);
    const header = b64url(
      JSON.stringify({ typ: "JWT", alg: "ES256", x5c: [der.toString("base64")] }),
    );
    const claims = b64url(
      JSON.stringify({
        iss: "taskrouter-test",
        sub: "alice",
        aud: url.searchParams.get("service"),
        exp: now + 300,
        nbf: now - 10,
        iat: now,
        jti: randomBytes(8).toString("hex"),
        access: [{ type, name, actions: (actions ?? "").split(",") }],
      }),
    );
    const sig = sign("sha256", Buffer.from(`${header}.${claims}`), {
      key: priv,
      dsaEncoding: "ieee-p1363",
    });
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ token: `${header}.${claims}.${b64url(sig)}` }));
  });
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const port = (srv.address() as AddressInfo).port;
  return {
    cert,
    realm: `http://127.0.0.1:${port}/token`,
    requests: () => requests,
    close: () => new Promise<void>((resolve) => srv.close(() => resolve())),
  };
}

describe("a registry with bearer tokens (token auth)", {
  skip: registrySkipReason({ openssl: true }),
}, () => {
  let dir: string;
  let tokens: Awaited<ReturnType<typeof startTokenService>>;
  let reg: TestRegistry;
  let a: TestRouter;
  let b: TestRouter;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskrouter-reg-token-"));
    tokens = await startTokenService(dir);
    reg = await startRegistry({
      token: {
        realm: tokens.realm,
        service: "taskrouter-test-registry",
        issuer: "taskrouter-test",
        rootCertBundle: tokens.cert,
      },
    });
    const ref = `${reg.host}/${REPO}`;
    const good = await authFile(dir, "good.json", reg.host, "alice", "s3cret");
    a = await startRouter({ registry: { ref, insecure: true, authFile: good, retry: RETRY } });
    b = await startRouter({ registry: { ref, insecure: true, retry: RETRY } });
  });
  after(async () => {
    for (const r of [b, a]) await r?.close();
    await reg?.close();
    await tokens?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("a router with credentials gets a token and pushes; one without is refused", async () => {
    const task = await a.newTask();
    const s = await taskScratch(a.dataDir, task);
    try {
      await makeTree(join(s.dir, "src"));
      const image = await new TaskImagesClient(a.client).snapshotDirectory(
        task,
        join(s.dir, "src"),
      );
      const r = await new ImagesAdminClient(a.client).push(image);
      assert.equal(r.done, true);
      assert.ok(tokens.requests() >= 1);
      await rejectsKind(
        () => new ImagesAdminClient(b.client).pull(image),
        "PermissionDenied",
        /token service .* refused \(HTTP 401\): give credentials with --registry-auth/,
      );
    } finally {
      await s.cleanup();
    }
  });
});
