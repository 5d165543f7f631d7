/**
 * Modal's own JS SDK (npm `modal` 0.11.1, unchanged) when the router's answer
 * to a call is lost: the call was done, the connection drops before the
 * answer reaches the SDK, and the SDK sends the identical request again
 * (its default policy on UNAVAILABLE, PROTOCOL-LATER §5.1). A TCP proxy
 * between the SDK and the router drops the first HTTP/2 response HEADERS
 * after it is armed and cuts the connection (test/helpers/proxy.ts,
 * `loseNextResponse`). Each replay must do nothing twice and answer as the
 * first call would have: one run of a command, an exec's and a V2
 * entrypoint's stdin bytes once, a mount, an unmount, a sidecar, a terminate. On the host runtime and runc (what is
 * checked here is the router's replay handling, which no runtime changes).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { SignJWT } from "jose";
import type { ModalClient, Sandbox } from "modal";
import { SIGNING_ALG } from "../src/auth/keys.ts";
import { ISSUER, issueToken, TASK_CLAIM } from "../src/auth/tokens.ts";
import { tarDirectory } from "../src/cli/tar-dir.ts";
import { ImagesAdminClient } from "../src/client/images.ts";
import { startVariant, taskBase, VARIANTS, variantSkip } from "./helpers/fs-sdk.ts";
import { scratch } from "./helpers/images.ts";
import { type ControlPlane, startControlPlane } from "./helpers/modal-control-plane.ts";
import { startProxy, type TcpProxy } from "./helpers/proxy.ts";
import type { TestRouter } from "./helpers/router.ts";
import { makeSidecarImage } from "./helpers/sidecar-image.ts";

// Hermetic, as in test/modal-sdk.test.ts: no MODAL_* of the machine's, the SDK loaded after.
for (const k of Object.keys(process.env)) if (k.startsWith("MODAL_")) delete process.env[k];
process.env.MODAL_CONFIG_PATH = "/dev/null";
const sdk = await import("modal");

/** What `seq N` prints. */
function expectedSeq(n: number): string {
  const parts: string[] = [];
  for (let i = 1; i <= n; i++) parts.push(`${i}\n`);
  return parts.join("");
}

/** A V1 sandbox id (`sb-` and 22 base-62 characters): reached through the proxy. */
const SANDBOX_ID = "sb-TaskRouterReplayTest01";
/** A V1 sandbox whose first task token has expired. */
const EXPIRED_ID = "sb-TaskRouterReplayTest02";
/** A V2 sandbox (any other id), also through the proxy. */
const V2_ID = "sb2-taskrouter-replay";

for (const v of VARIANTS.filter((x) => x.oci === undefined || x.oci === "runc")) {
  const skip = await variantSkip(v);
  // A hang guard for the whole suite (a stalled call must fail it, not hold CI): not a speed goal.
  describe(`Modal JS SDK 0.11.1, answers lost and replayed (${v.label})`, {
    skip,
    timeout: 180_000,
  }, () => {
    let r: TestRouter;
    let cp: ControlPlane;
    let proxy: TcpProxy;
    let modal: ModalClient;
    let sb: Sandbox;
    let base: string;

    before(async () => {
      r = await startVariant(v, { auth: { mode: "jwt" } });
      cp = await startControlPlane();
      proxy = await startProxy(r.address);
      const task = await r.newTask();
      await route(SANDBOX_ID, task);
      process.env.MODAL_SERVER_URL = cp.endpoint;
      modal = new sdk.ModalClient({
        tokenId: "ak-test",
        tokenSecret: "as-test",
        logLevel: "error",
      });
      sb = await modal.sandboxes.fromId(SANDBOX_ID);
      base = taskBase(r, v, task);
      assert.equal(await (await sb.exec(["mkdir", "-p", base])).wait(), 0);
    });
    after(async () => {
      try {
        sb?.detach();
        modal?.close();
        await cp?.close();
        await proxy?.close();
      } finally {
        await r?.close();
      }
    });

    /** Makes `sandboxId` the SDK's way to `taskId` through the proxy, with a token of that task. */
    const route = async (sandboxId: string, taskId: string) => {
      const key = r.daemon.signingKey;
      assert.ok(key, "a jwt router has a signing key");
      const jwt = await issueToken(key, { task: taskId }, 3_600_000);
      cp.add(sandboxId, { taskId, routerUrl: `https://${proxy.address}`, jwt });
    };

    /** Runs `call` with the router's next answer lost; returns its result once the SDK has it. */
    const losing = async <T>(call: () => Promise<T>): Promise<T> => {
      const cutsBefore = proxy.cuts;
      const lost = proxy.loseNextResponse();
      const result = await call();
      await lost;
      assert.equal(proxy.cuts, cutsBefore + 1, "the answer was lost and the connection cut");
      return result;
    };

    it("TaskExecStart: the command runs once, its output and exit code as without the loss", async () => {
      const p = await losing(() =>
        sb.exec(["sh", "-c", `echo run >> ${base}/runs; echo out; echo err >&2; exit 4`]),
      );
      const [out, err] = await Promise.all([p.stdout.readText(), p.stderr.readText()]);
      assert.equal(out, "out\n");
      assert.equal(err, "err\n");
      assert.equal(await p.wait(), 4);
      assert.equal(await sb.filesystem.readText(`${base}/runs`), "run\n", "one run");
    });

    it("TaskExecStdinWrite: bytes written once, in order, across the lost answer", async () => {
      // No output before stdin ends: the only answer under way is the write's.
      const p = await sb.exec(["sh", "-c", `cat > ${base}/stdin.txt; echo done`]);
      await p.stdin.writeText("one,");
      await losing(() => p.stdin.writeText("two,"));
      await p.stdin.writeText("three");
      await p.stdin.close();
      assert.equal(await p.stdout.readText(), "done\n");
      assert.equal(await p.wait(), 0);
      assert.equal(await sb.filesystem.readText(`${base}/stdin.txt`), "one,two,three");
    });

    it("SandboxStdinWriteV2: a V2 entrypoint's stdin written once, in order", async () => {
      // No output before stdin ends: the only answer under way is the write's.
      const { taskId } = await r.tasks.create("", {
        entrypoint: ["sh", "-c", "cat > stdin.txt; cat stdin.txt"],
      });
      await route(V2_ID, taskId);
      const v2 = await modal.sandboxes.fromId(V2_ID);
      try {
        await v2.stdin.writeText("one,");
        await losing(() => v2.stdin.writeText("two,"));
        await v2.stdin.writeText("three");
        await v2.stdin.close();
        assert.equal(await v2.stdout.readText(), "one,two,three");
      } finally {
        v2.detach();
      }
    });

    it("an idle connection given up under a slow reader: output read again from its offset, whole", async () => {
      // The SDK gives up its connection after this long with no operation in flight, aborting
      // open streams; a reader that holds a chunk longer counts as idle (PROTOCOL-LATER §5.1).
      const was = process.env.MODAL_SANDBOX_CHANNEL_IDLE_TIMEOUT;
      process.env.MODAL_SANDBOX_CHANNEL_IDLE_TIMEOUT = "0.05";
      const idle = new sdk.ModalClient({
        tokenId: "ak-test",
        tokenSecret: "as-test",
        logLevel: "error",
      });
      if (was === undefined) delete process.env.MODAL_SANDBOX_CHANNEL_IDLE_TIMEOUT;
      else process.env.MODAL_SANDBOX_CHANNEL_IDLE_TIMEOUT = was;
      try {
        const isb = await idle.sandboxes.fromId(SANDBOX_ID);
        try {
          const lines = 300_000;
          const p = await isb.exec(["seq", String(lines)]);
          const connectionsBefore = proxy.connections;
          const reader = p.stdout.getReader();
          let out = "";
          let reads = 0;
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            out += value;
            reads++;
            await sleep(150); // holding the chunk: the connection goes idle
          }
          assert.equal(await p.wait(), 0);
          assert.ok(reads > 1, `read in ${reads} pieces`);
          assert.ok(
            proxy.connections > connectionsBefore,
            "the SDK gave up its connection and dialed again",
          );
          assert.equal(out.length, expectedSeq(lines).length);
          assert.ok(out === expectedSeq(lines), "seq's output, whole and in order");
        } finally {
          isb.detach();
        }
      } finally {
        idle.close();
      }
    });

    it("an expired task token: UNAUTHENTICATED, the SDK gets a new one and the call goes through", async () => {
      const key = r.daemon.signingKey;
      assert.ok(key);
      const taskId = await r.newTask();
      // The control plane hands out a token that expired a minute ago (beyond the router's 30 s
      // of allowed clock skew), then good ones.
      let handedOut = 0;
      const jwt = async () => {
        handedOut++;
        if (handedOut > 1) return issueToken(key, { task: taskId }, 3_600_000);
        const now = Math.floor(Date.now() / 1000);
        return new SignJWT({ [TASK_CLAIM]: taskId })
          .setProtectedHeader({ alg: SIGNING_ALG, kid: key.kid, typ: "JWT" })
          .setIssuer(ISSUER)
          .setIssuedAt(now - 3_600)
          .setExpirationTime(now - 60)
          .sign(key.privateKey);
      };
      cp.add(EXPIRED_ID, { taskId, routerUrl: `https://${proxy.address}`, jwt });
      const esb = await modal.sandboxes.fromId(EXPIRED_ID);
      try {
        const p = await esb.exec(["echo", "with a new token"]);
        assert.equal(await p.stdout.readText(), "with a new token\n");
        assert.equal(await p.wait(), 0);
        assert.equal(handedOut, 2, "the SDK asked for a token once more, after the refusal");
      } finally {
        esb.detach();
      }
    });

    it("TaskMountDirectory and TaskUnmountDirectory: each done once, each answered OK", async () => {
      const fs = sb.filesystem;
      const src = `${base}/snap-src`;
      await fs.makeDirectory(src, { createParents: true });
      await fs.writeText("mounted", `${src}/a.txt`);
      const image = await sb.snapshotDirectory(src);
      const target = `${base}/mnt`;
      await fs.makeDirectory(target);
      await losing(() => sb.mountImage(target, image));
      assert.equal(await fs.readText(`${target}/a.txt`), "mounted");
      await losing(() => sb.unmountImage(target));
      assert.deepEqual(await fs.listFiles(target), [], "unmounted");
      // An unmount of a path nothing was unmounted from lately is still refused.
      await fs.makeDirectory(`${base}/never-mounted`);
      await assert.rejects(sb.unmountImage(`${base}/never-mounted`), /no directory is mounted/);
    });

    it("TaskContainerCreate and TaskContainerTerminate: one sidecar, ended once", {
      skip: v.oci === undefined ? "the host runtime has no sidecars" : undefined,
    }, async () => {
      const s = await scratch();
      try {
        const tree = `${s.dir}/tree`;
        await makeSidecarImage(tree);
        const imageId = await new ImagesAdminClient(r.client).import(tarDirectory(tree), {
          format: "tree",
          source: "test",
        });
        const image = new sdk.Image(modal, imageId, "");
        const side = await losing(() =>
          sb.experimentalSidecars.create("side", image, { command: ["sleep", "600"] }),
        );
        const listed = await sb.experimentalSidecars.list();
        assert.deepEqual(
          listed.map((c) => c.containerName),
          ["side"],
          "one sidecar",
        );
        const p = await side.exec(["cat", "/etc/marker"]);
        assert.equal(await p.stdout.readText(), "sidecar image\n");
        assert.equal(await p.wait(), 0);
        await losing(() => side.terminate());
        assert.equal(await side.wait(), 137);
      } finally {
        await s.cleanup();
      }
    });
  });
}
