/**
 * Modal's JS SDK (npm `modal` 0.11.1 and 0.10.1, unchanged) over TLS to a
 * router serving TLS, with a task token: the path real deployments take. test/modal-sdk.test.ts
 * runs the SDK the localhost way, and there the SDK dials the router WITHOUT
 * TLS.
 *
 * What decides TLS: the SDK's `isLocalhost(profile)` looks at the CONTROL
 * PLANE's URL (MODAL_SERVER_URL, the profile's serverUrl), not at the router
 * URL the control plane hands out: with a control plane on localhost,
 * 127.0.0.1, ::1 or 172.21.0.1 it dials every router in cleartext, whatever
 * that router's address. So here both the control plane (through a relay)
 * and the router are reached at 127.0.0.2, which Linux answers on (all of
 * 127/8 is loopback) and which is none of those names; the SDK then dials the
 * router with `ChannelCredentials.createSsl()`: the default roots, which its
 * grpc-js reads from GRPC_DEFAULT_SSL_ROOTS_FILE_PATH when it is loaded. Hence
 * a child process per trust setting (test/fixtures/modal-sdk-tls-child.mjs).
 *
 * The router serves `--tls-cert/--tls-key`: a certificate naming only
 * 127.0.0.2 (an IP SAN). Between the SDK and the router sits a byte-for-byte
 * TCP relay that keeps what the SDK sent (test/helpers/modal-sdk-tls-tap.ts):
 * the router serves TLS and cleartext HTTP/2 on one port, so a call that
 * succeeds proves nothing about TLS; the bytes on the wire do.
 *
 * The host runtime only: TLS ends at the router's listener, before a call
 * reaches any runtime; a runc task's exec and files travel the same TLS
 * connection as a host task's.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { status } from "@grpc/grpc-js";
import { RouterClient } from "../src/client/client.ts";
import { selfSignedCertificate } from "../src/tls/certs.ts";
import { type ControlPlane, startControlPlane } from "./helpers/modal-control-plane.ts";
import { routeTask } from "./helpers/modal-sdk.ts";
import {
  H2_PREFACE,
  howItBegan,
  sentOn,
  serverAnsweredTls,
  startTap,
  type Tap,
  type TappedConnection,
} from "./helpers/modal-sdk-tls-tap.ts";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";

const CHILD = fileURLToPath(new URL("./fixtures/modal-sdk-tls-child.mjs", import.meta.url));
/** The router's address: loopback, but none of the names the SDK dials without TLS. */
const ROUTER_HOST = "127.0.0.2";
/** Another loopback address, which the router's certificate does not name. */
const UNNAMED_HOST = "127.0.0.3";
const MiB = 1024 * 1024;
/** The SDK releases whose exec, stdin and files go over TLS (package names as installed). */
const SDKS = [
  { version: "0.11.1", pkg: "modal", sandboxId: "sb-TaskRouterTlsSandbox01" },
  { version: "0.10.1", pkg: "modal-0.10", sandboxId: "sb-TaskRouterTlsSandbox04" },
];
/** The release the refusals are shown with (0.10.1 dials the router with the same code). */
const NEWEST = "modal";

/** Why this cannot run here (no 127.0.0.2/127.0.0.3 on loopback, as on macOS), or undefined. */
async function skipReason(): Promise<string | undefined> {
  for (const host of [ROUTER_HOST, UNNAMED_HOST]) {
    const why = await new Promise<string | undefined>((resolve) => {
      const s = createServer();
      s.once("error", (e: NodeJS.ErrnoException) => resolve(`${e.code ?? e.message}`));
      s.listen(0, host, () => s.close(() => resolve(undefined)));
    });
    if (why)
      return `cannot listen on ${host} (${why}): the test needs loopback addresses other than 127.0.0.1`;
  }
  return undefined;
}

/** What the child printed last (test/fixtures/modal-sdk-tls-child.mjs). */
interface ChildAnswer {
  ok?: {
    exec?: { out: string; err: string; code: number };
    stdin?: { out: string; code: number };
    fs?: { path: string; length: number; sha256: string };
    code?: number;
  };
  error?: { name: string; code: number | null; details: string | null; message: string };
}
interface ChildRun {
  exit: number | null;
  signal: string | null;
  stderr: string;
  answer: ChildAnswer | undefined;
}

const skip = await skipReason();
if (skip) console.log(`# modal-sdk-tls skipped: ${skip}`);

// A hang guard for the whole suite (a stalled child must fail it, not hold CI): not a speed goal.
describe("Modal JS SDK over TLS to a TLS router (host runtime)", {
  skip,
  timeout: 120_000,
}, () => {
  let dir: string | undefined;
  let r: TestRouter | undefined;
  let cp: ControlPlane | undefined;
  const taps: Tap[] = [];
  const children = new Set<ChildProcess>();
  /** How one SDK child reaches the router: a tap of its own (their bytes stay apart), a task. */
  interface Way {
    tap: Tap;
    task: string;
    run: Promise<ChildRun>;
  }
  /** By SDK package: the child that execs, writes stdin and a file over TLS. */
  const works = new Map<string, Way>();
  let untrusted: Way;
  let unnamed: Way;
  let upload: Buffer;
  const sentinel = `taskrouter-tls-sentinel-${randomBytes(12).toString("hex")}`;

  /** Runs the SDK child with `roots` as its only trusted certificates; never rejects. */
  const runChild = (
    serverUrl: string,
    roots: string,
    pkg: string,
    args: string[],
  ): Promise<ChildRun> => {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (/^(MODAL_|GRPC_)/.test(k)) continue;
      if (["NODE_OPTIONS", "NODE_TEST_CONTEXT", "NODE_EXTRA_CA_CERTS"].includes(k)) continue;
      env[k] = v;
    }
    env.MODAL_CONFIG_PATH = "/dev/null";
    env.MODAL_SERVER_URL = serverUrl;
    env.GRPC_DEFAULT_SSL_ROOTS_FILE_PATH = roots;
    const child = spawn(process.execPath, [CHILD, pkg, ...args], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.add(child);
    let stdout = "";
    let stderr = "";
    child.stdout?.setEncoding("utf8").on("data", (s: string) => (stdout += s));
    child.stderr?.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    return new Promise((resolve) => {
      child.once("error", (err) =>
        resolve({ exit: null, signal: null, stderr: String(err), answer: undefined }),
      );
      child.once("close", (exit, signal) => {
        children.delete(child);
        const last = stdout.trim().split("\n").at(-1) ?? "";
        let answer: ChildAnswer | undefined;
        try {
          answer = JSON.parse(last) as ChildAnswer;
        } catch {
          answer = undefined;
        }
        resolve({ exit, signal, stderr, answer });
      });
    });
  };

  /** The child's answer, or a failure that shows why there is none. */
  const answerOf = async (way: Way | undefined): Promise<ChildAnswer> => {
    assert.ok(way, "the child was started");
    const got = await way.run;
    assert.ok(
      got.answer,
      `the SDK child gave no answer (exit ${got.exit}, signal ${got.signal}): ${got.stderr}`,
    );
    assert.equal(got.exit, 0, got.stderr);
    return got.answer;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskrouter-modal-sdk-tls-"));
    // The router's certificate names 127.0.0.2 only. The refused child trusts another one, made
    // for the same address with another key, instead.
    const served = selfSignedCertificate([], [ROUTER_HOST]);
    const stranger = selfSignedCertificate([], [ROUTER_HOST]);
    const certFile = join(dir, "router.crt");
    const keyFile = join(dir, "router.key");
    const strangerFile = join(dir, "stranger.crt");
    await writeFile(certFile, served.cert);
    await writeFile(keyFile, served.key, { mode: 0o600 });
    await writeFile(strangerFile, stranger.cert);
    upload = randomBytes(4 * MiB + 7);
    const uploadFile = join(dir, "upload.bin");
    await writeFile(uploadFile, upload);

    r = await startRouter({
      listen: `${ROUTER_HOST}:0`,
      auth: { mode: "jwt" },
      tls: { certFile, keyFile },
    });
    const router = r;
    cp = await startControlPlane();
    // The SDK must not see a localhost control plane: it would dial the router in cleartext.
    const cpTap = await startTap(ROUTER_HOST, cp.endpoint.replace(/^http:\/\//, ""));
    taps.push(cpTap);
    const serverUrl = `http://${cpTap.address}`;

    const controlPlane = cp;
    /**
     * Starts the SDK child `pkg` with `roots` on a sandbox of a new task, which the control
     * plane says is at a new tap on `host` in front of the router.
     */
    const start = async (
      pkg: string,
      roots: string,
      sandboxId: string,
      host: string,
      args: (task: string) => string[],
    ): Promise<Way> => {
      const tap = await startTap(host, router.address);
      taps.push(tap);
      const task = await router.newTask();
      await routeTask(controlPlane, router, sandboxId, task, tap.address);
      return { tap, task, run: runChild(serverUrl, roots, pkg, [sandboxId, ...args(task)]) };
    };
    // All run side by side: the refused ones spend most of their time in the SDK's retry
    // back-off (about 10 s), which the others' work overlaps.
    for (const { pkg, sandboxId } of SDKS) {
      const workDir = (task: string) => join(router.dataDir, "tasks", task, "work");
      const args = (task: string) => ["work", workDir(task), uploadFile, sentinel];
      works.set(pkg, await start(pkg, certFile, sandboxId, ROUTER_HOST, args));
    }
    const exec = () => ["exec"];
    untrusted = await start(NEWEST, strangerFile, "sb-TaskRouterTlsSandbox02", ROUTER_HOST, exec);
    unnamed = await start(NEWEST, certFile, "sb-TaskRouterTlsSandbox03", UNNAMED_HOST, exec);
  });

  after(async () => {
    for (const c of children) {
      if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) {
        try {
          process.kill(c.pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
    }
    try {
      for (const t of taps) await t.close();
      await cp?.close();
    } finally {
      try {
        await r?.close();
      } finally {
        if (dir) await rm(dir, { recursive: true, force: true });
      }
    }
  });

  /**
   * Asserts that the SDK's connections through `tap` were TLS: every one on which it sent
   * anything began with a ClientHello (a connection opened as the child exits may carry
   * nothing), every answer of the router began with a ServerHello, and no cleartext HTTP/2
   * preface went anywhere. Returns those connections.
   */
  const allTls = (tap: Tap): TappedConnection[] => {
    const conns = tap.connections.filter((c) => howItBegan(c) !== "nothing");
    assert.ok(conns.length > 0, "the SDK reached the router through the tap");
    assert.deepEqual(
      conns.map(howItBegan),
      conns.map(() => "tls"),
      "every connection began with a TLS ClientHello",
    );
    // (A connection the child opened as it exited may have had no answer before it closed.)
    const answered = conns.filter((c) => c.downBytes > 0);
    assert.ok(answered.length > 0, "the router answered");
    assert.ok(answered.every(serverAnsweredTls), "each answer began with a TLS handshake");
    for (const c of conns) {
      assert.ok(!sentOn(c, H2_PREFACE), "no cleartext HTTP/2 preface anywhere");
    }
    return conns;
  };

  for (const { version, pkg } of SDKS) {
    it(`${version}: exec's stdout, stderr and exit code over TLS`, async () => {
      const { ok } = await answerOf(works.get(pkg));
      assert.deepEqual(ok?.exec, { out: "out\n", err: "err\n", code: 3 });
    });

    it(`${version}: stdin written and closed comes back from stdout over TLS`, async () => {
      const { ok } = await answerOf(works.get(pkg));
      assert.deepEqual(ok?.stdin, { out: `${sentinel}\n${sentinel} again\n`, code: 0 });
    });

    it(`${version}: a 4 MiB file written and read back over TLS, and on the task's disk`, async () => {
      const { ok } = await answerOf(works.get(pkg));
      const fs = ok?.fs;
      assert.ok(fs, "the child wrote and read a file");
      assert.equal(fs.length, upload.length);
      assert.equal(fs.sha256, createHash("sha256").update(upload).digest("hex"));
      // The host runtime's task directory is this machine's: the bytes really were written.
      assert.ok((await readFile(fs.path)).equals(upload), "the file on disk is the upload");
    });

    it(`${version}: the wire was TLS both ways, nothing in the clear`, async () => {
      const way = works.get(pkg);
      await answerOf(way);
      assert.ok(way && r);
      // The SDK says so when it dials a router without verifying it (a localhost control plane).
      assert.doesNotMatch((await way.run).stderr, /insecure/i);
      const conns = allTls(way.tap);
      // The upload went through this tap (encrypted, so a little more than its size)...
      const up = conns.reduce((n, c) => n + c.upBytes, 0);
      assert.ok(up > upload.length, `bytes sent through the tap: ${up}`);
      // ...and neither it nor stdin (sent up, and echoed down by cat) is there in the clear.
      const slice = upload.subarray(2 * MiB, 2 * MiB + 64);
      for (const c of conns) {
        assert.ok(!sentOn(c, Buffer.from(sentinel)), "stdin went over the wire in the clear");
        assert.ok(!sentOn(c, slice), "the file went over the wire in the clear");
      }
      // The router ran what the SDK asked (sh, cat, and the filesystem helper's execs).
      assert.ok(r.daemon.tasks.listExecs(way.task).length >= 4);
    });
  }

  it("the same checks see a cleartext client (the router's own, same port)", async () => {
    const way = works.get(NEWEST);
    assert.ok(way && r);
    const plain = await startTap(ROUTER_HOST, r.address);
    taps.push(plain);
    const c = new RouterClient(plain.address, r.adminToken ? { token: r.adminToken } : {});
    try {
      const id = await c.start(way.task, ["cat"], { stdout: "pipe" });
      await c.writeStdin(way.task, id, 0, Buffer.from(sentinel), true);
      assert.equal((await collect(c.read(way.task, id, "stdout"))).toString(), sentinel);
    } finally {
      c.close();
    }
    assert.ok(plain.connections.length > 0);
    assert.ok(plain.connections.some((x) => howItBegan(x) === "h2c"));
    assert.ok(plain.connections.some((x) => sentOn(x, Buffer.from(sentinel))));
  });

  it("a router certificate the SDK does not trust: UNAVAILABLE, no fallback to cleartext", async () => {
    const { error } = await answerOf(untrusted);
    assert.ok(error, "the SDK's exec failed");
    assert.equal(error.code, status.UNAVAILABLE, JSON.stringify(error));
    assert.match(error.details ?? "", /self[- ]signed certificate/, JSON.stringify(error));
    // It tried TLS only (the port would have taken cleartext) and no call reached the router.
    allTls(untrusted.tap);
    assert.equal(r?.daemon.tasks.listExecs(untrusted.task).length, 0);
  });

  it("a trusted certificate that does not name the address dialled: UNAVAILABLE", async () => {
    const { error } = await answerOf(unnamed);
    assert.ok(error, "the SDK's exec failed");
    assert.equal(error.code, status.UNAVAILABLE, JSON.stringify(error));
    assert.match(error.details ?? "", /altnames/, JSON.stringify(error));
    assert.ok(error.details?.includes(UNNAMED_HOST), JSON.stringify(error));
    allTls(unnamed.tap);
    assert.equal(r?.daemon.tasks.listExecs(unnamed.task).length, 0);
  });
});
