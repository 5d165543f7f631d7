/**
 * Modal's own JS SDK (npm `modal` 0.11.1, unchanged) through what goes wrong
 * between it and the router, each time with its own recovery:
 * - An answer lost: the call was done, the connection drops before the
 *   answer reaches the SDK, and the SDK sends the identical request again
 *   (its default policy on UNAVAILABLE, PROTOCOL-LATER §5.1). A TCP proxy
 *   between the SDK and the router drops the first HTTP/2 response HEADERS
 *   after it is armed and cuts the connection (test/helpers/proxy.ts,
 *   `loseNextResponse`). Each replay must do nothing twice and answer as the
 *   first call would have: one run of a command, an exec's and a V2
 *   entrypoint's stdin bytes once, a mount, an unmount, a sidecar, a
 *   terminate. On the host runtime and runc (the router's replay handling,
 *   which no runtime changes).
 * - A connection the SDK gives up while its reader is slow, and a task token
 *   that expired (UNAVAILABLE and UNAUTHENTICATED paths of the SDK).
 * - The router killed (SIGKILL) and started again on its data dir while the
 *   SDK reads an exec's output and writes its stdin: the SDK's retries reach
 *   the new router, which serves the same exec from the offsets reached.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { SignJWT } from "jose";
import type { ModalClient, Sandbox } from "modal";
import { SIGNING_ALG } from "../src/auth/keys.ts";
import { ISSUER, issueToken, TASK_CLAIM } from "../src/auth/tokens.ts";
import { tarDirectory } from "../src/cli/tar-dir.ts";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { ImagesAdminClient } from "../src/client/images.ts";
import { startVariant, taskBase, VARIANTS, variantSkip } from "./helpers/fs-sdk.ts";
import { scratch } from "./helpers/images.ts";
import { KillableRouter } from "./helpers/killable-router.ts";
import { type ControlPlane, startControlPlane } from "./helpers/modal-control-plane.ts";
import { closeSdk, expectedSeq, loadSdks, modalClient, routeTask } from "./helpers/modal-sdk.ts";
import { sample, scrapeProm } from "./helpers/prom.ts";
import { startProxy, type TcpProxy } from "./helpers/proxy.ts";
import type { TestRouter } from "./helpers/router.ts";
import { makeSidecarImage } from "./helpers/sidecar-image.ts";

// None of this machine's Modal config plays a part (helpers/modal-sdk.ts).
const { current: sdk } = await loadSdks();
/** The router service's methods, as the router's metrics name them. */
const ROUTER = "/modal.task_command_router.TaskCommandRouter";

/** A V1 sandbox id (`sb-` and 22 base-62 characters): reached through the proxy. */
const SANDBOX_ID = "sb-TaskRouterReplayTest01";
/** A V1 sandbox whose first task token has expired. */
const EXPIRED_ID = "sb-TaskRouterReplayTest02";
/** A V1 sandbox of the router that is killed and started again. */
const RESTART_ID = "sb-TaskRouterReplayTest03";
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
      r = await startVariant(v, { auth: { mode: "jwt" }, metricsListen: "127.0.0.1:0" });
      cp = await startControlPlane();
      proxy = await startProxy(r.address);
      const task = await r.newTask();
      await route(SANDBOX_ID, task);
      modal = modalClient(sdk, cp);
      sb = await modal.sandboxes.fromId(SANDBOX_ID);
      base = taskBase(r, v, task);
      assert.equal(await (await sb.exec(["mkdir", "-p", base])).wait(), 0);
    });
    after(async () => {
      try {
        await closeSdk({ sb, modal, cp, proxy });
      } finally {
        await r?.close();
      }
    });

    /** Makes `sandboxId` the SDK's way to `taskId` through the proxy, with a token of that task. */
    const route = (sandboxId: string, taskId: string) =>
      routeTask(cp, r, sandboxId, taskId, proxy.address);

    /** Calls of `method` the router has answered OK so far (its metrics). */
    const answeredOk = async (method: string) =>
      sample(
        await scrapeProm(`http://${r.daemon.metricsAddress}/metrics`),
        `taskrouter_rpcs_total{method="${ROUTER}/${method}",code="OK"}`,
      );

    /**
     * Runs `call`, a call of `method`, with the router's next answer lost; returns its result
     * once the SDK has it. The lost answer was `method`'s: the router answered it OK twice (the
     * call and its replay; counted when a call's stream closes, which may come just after the
     * SDK has its answer).
     */
    const losing = async <T>(method: string, call: () => Promise<T>): Promise<T> => {
      const cutsBefore = proxy.cuts;
      const okBefore = await answeredOk(method);
      const lost = proxy.loseNextResponse();
      let result: T;
      try {
        result = await call();
      } finally {
        proxy.keepResponses();
      }
      await lost;
      assert.equal(proxy.cuts, cutsBefore + 1, "the answer was lost and the connection cut");
      while ((await answeredOk(method)) < okBefore + 2) await sleep(20);
      assert.equal(await answeredOk(method), okBefore + 2, `${method}: the call and its replay`);
      return result;
    };

    it("TaskExecStart: the command runs once, its output and exit code as without the loss", async () => {
      const p = await losing("TaskExecStart", () =>
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
      await losing("TaskExecStdinWrite", () => p.stdin.writeText("two,"));
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
        await losing("SandboxStdinWriteV2", () => v2.stdin.writeText("two,"));
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
      const idle = modalClient(sdk, cp, { MODAL_SANDBOX_CHANNEL_IDLE_TIMEOUT: "0.05" });
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

    it("TaskMountDirectory and TaskUnmountDirectory: answered OK, mounted, then unmounted", async () => {
      const fs = sb.filesystem;
      const src = `${base}/snap-src`;
      await fs.makeDirectory(src, { createParents: true });
      await fs.writeText("mounted", `${src}/a.txt`);
      const image = await sb.snapshotDirectory(src);
      const target = `${base}/mnt`;
      await fs.makeDirectory(target);
      await losing("TaskMountDirectory", () => sb.mountImage(target, image));
      assert.equal(await fs.readText(`${target}/a.txt`), "mounted");
      await losing("TaskUnmountDirectory", () => sb.unmountImage(target));
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
        const side = await losing("TaskContainerCreate", () =>
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
        await losing("TaskContainerTerminate", () => side.terminate());
        assert.equal(await side.wait(), 137);
      } finally {
        await s.cleanup();
      }
    });
  });
}

// A hang guard for the whole suite (a stalled call must fail it, not hold CI): not a speed goal.
describe("Modal JS SDK 0.11.1 across a router SIGKILL and restart (host runtime)", {
  timeout: 180_000,
}, () => {
  const router = new KillableRouter(["--runtime", "host"]);
  let client: RouterClient | undefined;
  let cp: ControlPlane | undefined;
  let proxy: TcpProxy | undefined;
  let modal: ModalClient | undefined;
  let sb: Sandbox | undefined;
  let gate: string | undefined;

  after(async () => {
    try {
      await closeSdk({ sb, modal, cp, proxy });
      // Terminating the task ends its agent and every exec in it.
      if (client) await new TasksClient(client).terminate("t").catch(() => undefined);
      client?.close();
    } finally {
      await router.stop();
      if (gate) await rm(gate, { recursive: true, force: true });
    }
  });

  it("an exec's output and stdin go on from where they were, nothing lost or doubled", async () => {
    const first = await router.start();
    client = new RouterClient(first);
    await new TasksClient(client).create("t");
    proxy = await startProxy(first);
    cp = await startControlPlane();
    // An auth-less router: the SDK's token is not checked, but the SDK needs one.
    cp.add(RESTART_ID, { taskId: "t", routerUrl: `https://${proxy.address}`, jwt: "unchecked" });
    modal = modalClient(sdk, cp);
    sb = await modal.sandboxes.fromId(RESTART_ID);
    gate = await mkdtemp(join(tmpdir(), "taskrouter-sdk-restart-"));
    const go = join(gate, "go");
    // Output in two bursts, the router killed between them; stdin read after the restart.
    const lines = 200_000;
    const script = `seq 1 ${lines / 2}; until [ -e ${go} ]; do sleep 0.05; done; seq ${lines / 2 + 1} ${lines}; cat > ${gate}/stdin.txt`;
    const p = await sb.exec(["sh", "-c", script]);
    await p.stdin.writeText("before,");
    const reader = p.stdout.getReader();
    let out = "";
    while (!out.endsWith(`${lines / 2}\n`)) {
      const { done, value } = await reader.read();
      assert.ok(!done, "the first burst ended the stream");
      out += value;
    }
    await router.kill9();
    client.close();
    // A read the SDK has open now fails and is retried with backoff until the router is back.
    const more = reader.read();
    const address = await router.start();
    client = new RouterClient(address);
    proxy.retarget(address);
    await writeFile(go, "");
    // The second burst; then the command reads its stdin to the end, and its output ends.
    let pending: typeof more | undefined = more;
    while (!out.endsWith(`\n${lines}\n`)) {
      const next = await (pending ?? reader.read());
      pending = undefined;
      assert.ok(!next.done, "the output ended before the second burst did");
      out += next.value;
    }
    await p.stdin.writeText("after");
    await p.stdin.close();
    for (let next = await reader.read(); !next.done; next = await reader.read()) out += next.value;
    assert.equal(await p.wait(), 0);
    assert.equal(out.length, expectedSeq(lines).length);
    assert.ok(out === expectedSeq(lines), "seq's output, whole and in order");
    assert.equal(await readFile(join(gate, "stdin.txt"), "utf8"), "before,after");
  });
});
