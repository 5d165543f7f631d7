/**
 * Authentication: tokens of external issuers (--jwt-public-key, --jwks) and the
 * AuthServer guard on every call kind. Shared helpers: test/helpers/auth-common.ts.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
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
import { loadOrCreateSigningKey } from "../src/auth/keys.ts";
import { issueToken } from "../src/auth/tokens.ts";
import { ownKey } from "../src/auth/trusted-keys.ts";
import { TokenVerifier } from "../src/auth/verifier.ts";
import { AuthServer } from "../src/server/transport/auth.ts";
import { clients, clientWith, failure, HOUR } from "./helpers/auth-common.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";

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
