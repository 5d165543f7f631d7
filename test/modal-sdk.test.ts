/**
 * Modal's own JS SDK (npm `modal`, pinned in package.json), unchanged, against
 * the router: `Sandbox.exec` with its stdio, stdin, env, secrets, workdir,
 * timeout and PTY; `Sandbox.filesystem` (the fs helper the SDK execs); streams
 * resumed across cut connections; snapshots, mounts and sidecars; a V2
 * sandbox's entrypoint. The SDK asks a stand-in control plane for the sandbox's
 * task and the router's URL and token (test/helpers/modal-control-plane.ts),
 * then talks to the router as it talks to Modal's, with a task token. On every
 * runtime of the conformance suite (the release before the newest: on the host
 * runtime and runc).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import type { FileWatchEvent, ModalClient, Sandbox } from "modal";
import { tarDirectory } from "../src/cli/tar-dir.ts";
import { ImagesAdminClient } from "../src/client/images.ts";
import { startVariant, taskBase, VARIANTS, variantSkip } from "./helpers/fs-sdk.ts";
import { scratch } from "./helpers/images.ts";
import { type ControlPlane, startControlPlane } from "./helpers/modal-control-plane.ts";
import {
  closeSdk,
  expectedSeq,
  loadSdks,
  modalClient,
  routeTask,
  type Sdk,
} from "./helpers/modal-sdk.ts";
import { startProxy } from "./helpers/proxy.ts";
import type { TestRouter } from "./helpers/router.ts";
import { RUNSC } from "./helpers/runc.ts";
import { makeSidecarImage } from "./helpers/sidecar-image.ts";

// None of this machine's Modal config plays a part (helpers/modal-sdk.ts).
const { current, previous } = await loadSdks();

/** A sandbox id of the shape the SDK takes for a V1 sandbox (`sb-` and 22 base-62 characters). */
const V1_ID = "sb-TaskRouterTestSandbox1";
/** The same task, reached through a TCP proxy that cuts connections. */
const CUT_ID = "sb-TaskRouterTestSandbox2";
/** Any other id is a V2 sandbox's to the SDK. */
const V2_ID = "sb2-taskrouter-test";
const MiB = 1024 * 1024;

/** What the SDK's wait() gives for an exec killed by its timeout (SIGKILL: 128 + 9). */
const TIMEOUT_EXIT = 137;

/**
 * The SDK releases run: the newest on every runtime, the one before it on the host runtime
 * and runc (what differs between runtimes is the newest's to show; what differs between
 * releases is the SDK's, whatever the runtime).
 */
const SDKS: { version: string; sdk: Sdk; variants: typeof VARIANTS }[] = [
  { version: "0.11.1", sdk: current, variants: VARIANTS },
  {
    version: "0.10.1",
    sdk: previous,
    variants: VARIANTS.filter((v) => v.oci === undefined || v.oci === "runc"),
  },
];

for (const { version, sdk, variants } of SDKS)
  for (const v of variants) {
    const skip = await variantSkip(v);
    // A hang guard for the whole suite (a stalled stream must fail it, not hold CI): not a speed goal.
    describe(`Modal JS SDK ${version} against the router (${v.label})`, {
      skip,
      timeout: 180_000,
    }, () => {
      let r: TestRouter;
      let cp: ControlPlane;
      let modal: ModalClient;
      let sb: Sandbox;
      let task: string;
      let base: string;
      /** A directory a container task made under its /tmp (unset on the host runtime). */
      let tmpBase: string | undefined;
      let local: string;

      /** Makes `sandboxId` the SDK's way to `taskId`, with a token of that task, at `address`. */
      const route = (sandboxId: string, taskId: string, address = r.address) =>
        routeTask(cp, r, sandboxId, taskId, address);

      before(async () => {
        r = await startVariant(v, { auth: { mode: "jwt" } });
        cp = await startControlPlane();
        task = await r.newTask();
        await route(V1_ID, task);
        modal = modalClient(sdk, cp);
        sb = await modal.sandboxes.fromId(V1_ID);
        base = taskBase(r, v, task);
        assert.equal(await (await sb.exec(["mkdir", "-p", base])).wait(), 0);
        if (v.oci) {
          // Inside the container (removed with it); the host runtime's /tmp is this machine's.
          const made = await sb.exec(["mktemp", "-d", "/tmp/modal-sdk.XXXXXX"]);
          tmpBase = (await made.stdout.readText()).trim();
          assert.equal(await made.wait(), 0);
        }
        local = await mkdtemp(join(tmpdir(), "taskrouter-modal-sdk-"));
      });
      after(async () => {
        try {
          await closeSdk({ sb, modal, cp });
        } finally {
          try {
            await r?.close();
          } finally {
            if (local) await rm(local, { recursive: true, force: true });
          }
        }
      });

      it("exec: stdout, stderr and the exit code (the control plane asked first)", async () => {
        const p = await sb.exec(["sh", "-c", "echo out; echo err >&2; exit 3"]);
        const [out, err] = await Promise.all([p.stdout.readText(), p.stderr.readText()]);
        assert.equal(out, "out\n");
        assert.equal(err, "err\n");
        assert.equal(await p.wait(), 3);
        assert.deepEqual(cp.calls.slice(0, 3).sort(), [
          "AuthTokenGet",
          "SandboxGetTaskId",
          "TaskGetCommandRouterAccess",
        ]);
      });

      it("exec: env, secrets from an object, and workdir", async () => {
        const secret = await modal.secrets.fromObject({ FROM_SECRET: "s3cret", SHARED: "secret" });
        const p = await sb.exec(
          ["sh", "-c", 'printf "%s|%s|%s|" "$FOO" "$FROM_SECRET" "$SHARED"; pwd'],
          { env: { FOO: "bar baz", SHARED: "env" }, secrets: [secret], workdir: base },
        );
        // The SDK sends the secret first and `env` last: a later source wins.
        assert.equal(await p.stdout.readText(), `bar baz|s3cret|env|${base}\n`);
        assert.equal(await p.wait(), 0);
      });

      it("exec: stdin written in pieces and closed comes back whole from stdout", async () => {
        const data = randomBytes(8 * MiB);
        const p = await sb.exec(["cat"], { mode: "binary" });
        const out = p.stdout.readBytes();
        for (let at = 0; at < data.length; at += MiB) {
          await p.stdin.writeBytes(data.subarray(at, at + MiB));
        }
        await p.stdin.close();
        assert.ok(Buffer.from(await out).equals(data), "cat's stdout is the bytes written");
        assert.equal(await p.wait(), 0);
      });

      it("exec: 64 MiB of output read to its end", async () => {
        const p = await sb.exec(["sh", "-c", "head -c 67108864 /dev/zero"], { mode: "binary" });
        const out = await p.stdout.readBytes();
        assert.equal(out.length, 64 * MiB);
        assert.ok(
          out.every((b) => b === 0),
          "every byte is the command's",
        );
        assert.equal(await p.wait(), 0);
      });

      it("exec: stdout ignored, stderr still read", async () => {
        const p = await sb.exec(["sh", "-c", "echo gone; echo kept >&2"], { stdout: "ignore" });
        assert.equal(await p.stderr.readText(), "kept\n");
        assert.equal(await p.stdout.readText(), "");
        assert.equal(await p.wait(), 0);
      });

      it("exec: timeoutMs ends a command that runs on, and its streams", async () => {
        const p = await sb.exec(["sh", "-c", "echo started; exec sleep 60"], { timeoutMs: 1000 });
        const out = await p.stdout.readText();
        assert.ok(out === "started\n" || out === "", `stdout ${JSON.stringify(out)}`);
        assert.equal(await p.wait(), TIMEOUT_EXIT);
      });

      it("exec: a PTY", async () => {
        // `[ -t ]`, not tty(1): this gVisor's tty(1) says "not a tty" on a terminal.
        const p = await sb.exec(["sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo terminal"], {
          pty: true,
        });
        assert.equal(await p.stdout.readText(), "terminal\r\n");
        assert.equal(await p.wait(), 0);
      });

      it("a V2 sandbox: its entrypoint's stdin, stdout and stderr, readiness, and an exec", async () => {
        const { taskId } = await r.tasks.create("", {
          entrypoint: ["sh", "-c", 'while read l; do echo "got $l"; done; echo bye >&2'],
          readinessProbe: "exec:true",
        });
        await route(V2_ID, taskId);
        const v2 = await modal.sandboxes.fromId(V2_ID);
        try {
          await v2.waitUntilReady(60_000);
          // An exec first: the task ends with its entrypoint.
          const p = await v2.exec(["echo", "exec in a V2 sandbox"]);
          assert.equal(await p.stdout.readText(), "exec in a V2 sandbox\n");
          assert.equal(await p.wait(), 0);
          await v2.stdin.writeText("a\nb\n");
          await v2.stdin.close();
          assert.equal(await v2.stdout.readText(), "got a\ngot b\n");
          assert.equal(await v2.stderr.readText(), "bye\n");
        } finally {
          v2.detach();
        }
        // The SDK found it the V2 way.
        assert.ok(cp.calls.includes("SandboxGetTaskIdV2"), cp.calls.join(" "));
        assert.ok(cp.calls.includes("SandboxGetCommandRouterAccess"), cp.calls.join(" "));
      });

      it("connections cut mid-stream: output and a file upload resume, no byte lost or doubled", async () => {
        const proxy = await startProxy(r.address);
        let viaProxy: Sandbox | undefined;
        try {
          // A task of its own: the control plane gives one route per task.
          const cutTask = await r.newTask();
          await route(CUT_ID, cutTask, proxy.address);
          viaProxy = await modal.sandboxes.fromId(CUT_ID);
          const cutBase = taskBase(r, v, cutTask);
          assert.equal(await (await viaProxy.exec(["mkdir", "-p", cutBase])).wait(), 0);
          // Output: the connection cut once 4 MiB came down.
          const lines = 2_000_000;
          const p = await viaProxy.exec(["seq", String(lines)]);
          void proxy.cutAfter(4 * MiB);
          const out = await p.stdout.readText();
          assert.equal(proxy.cuts, 1, "the output's connection was cut");
          assert.equal(await p.wait(), 0);
          assert.equal(out.length, expectedSeq(lines).length);
          assert.ok(out === expectedSeq(lines), "seq's output, whole and in order");
          // Upload: every connection cut each time 3 MiB more went up.
          const bytes = randomBytes(12 * MiB + 5);
          const stop = proxy.cutEveryUp(3 * MiB);
          try {
            await viaProxy.filesystem.writeBytes(bytes, `${cutBase}/through-cuts.bin`);
          } finally {
            stop();
          }
          assert.ok(proxy.cuts >= 3, `connections cut: ${proxy.cuts}`);
          const back = await viaProxy.filesystem.readBytes(`${cutBase}/through-cuts.bin`);
          assert.ok(Buffer.from(back).equals(bytes), "the file is the bytes written");
        } finally {
          viaProxy?.detach();
          await proxy.close();
        }
      });

      it("filesystem: text and bytes written, read back, listed and stat'ed", async () => {
        const fs = sb.filesystem;
        const dir = `${base}/fs/a/b`;
        await fs.makeDirectory(dir, { createParents: true });
        await fs.writeText("hello from the SDK\n", `${dir}/hello.txt`);
        assert.equal(await fs.readText(`${dir}/hello.txt`), "hello from the SDK\n");
        const bytes = randomBytes(4 * MiB + 3);
        await fs.writeBytes(bytes, `${dir}/blob.bin`);
        assert.ok(Buffer.from(await fs.readBytes(`${dir}/blob.bin`)).equals(bytes));
        const names = (await fs.listFiles(dir)).map((f) => f.name).sort();
        assert.deepEqual(names, ["blob.bin", "hello.txt"]);
        const st = await fs.stat(`${dir}/blob.bin`);
        assert.equal(st.type, "file");
        assert.equal(st.size, bytes.length);
        assert.equal((await fs.stat(dir)).type, "directory");
      });

      it("filesystem: copyFromLocal and copyToLocal move a file both ways", async () => {
        const fs = sb.filesystem;
        const src = join(local, "up.bin");
        const back = join(local, "down.bin");
        const bytes = randomBytes(16 * MiB + 1);
        await writeFile(src, bytes);
        await fs.copyFromLocal(src, `${base}/copied.bin`);
        await fs.copyToLocal(`${base}/copied.bin`, back);
        assert.ok((await readFile(back)).equals(bytes));
      });

      it("filesystem: the SDK's typed errors, and remove", async () => {
        const fs = sb.filesystem;
        await assert.rejects(
          fs.readText(`${base}/no-such-file`),
          sdk.SandboxFilesystemNotFoundError,
        );
        await fs.makeDirectory(`${base}/gone/inner`, { createParents: true });
        await assert.rejects(fs.readText(`${base}/gone`), sdk.SandboxFilesystemIsADirectoryError);
        await fs.writeText("x", `${base}/gone/inner/f`);
        await fs.remove(`${base}/gone`, { recursive: true });
        await assert.rejects(fs.stat(`${base}/gone`), sdk.SandboxFilesystemNotFoundError);
      });

      it("filesystem: watch reports a file written by another exec", async () => {
        const fs = sb.filesystem;
        const dir = `${base}/watched`;
        await fs.makeDirectory(dir);
        const events = fs.watch(dir, { timeoutMs: 60_000 })[Symbol.asyncIterator]();
        try {
          // The watcher may start after a write: write a new file until an event names one (the
          // watch's own timeout and the suite's guard end a watch that never does).
          let named: FileWatchEvent | undefined;
          let next = events.next();
          for (let i = 0; !named; i++) {
            await fs.writeText(String(i), `${dir}/new-${i}`);
            const got = await Promise.race([next, sleep(200).then(() => undefined)]);
            if (!got) continue; // the same `next` is awaited again after the next write
            assert.ok(!got.done, "the watch ended before it reported a file written there");
            if (got.value.paths.some((p) => /\/new-\d+$/.test(p))) named = got.value;
            else next = events.next();
          }
          assert.ok(
            named.paths.every((p) => p.startsWith(`${dir}/`)),
            JSON.stringify(named),
          );
        } finally {
          await events.return?.();
        }
      });

      it("sidecars: one from an image of the router's store, its exec, files and end", async () => {
        const s = await scratch();
        try {
          const tree = join(s.dir, "tree");
          await makeSidecarImage(tree);
          const images = new ImagesAdminClient(r.client);
          const imageId = await images.import(tarDirectory(tree), {
            format: "tree",
            source: "test",
          });
          // The SDK makes an Image of an id the same way from a snapshot's answer.
          const image = new sdk.Image(modal, imageId, "");
          const create = () =>
            sb.experimentalSidecars.create("side", image, { command: ["sleep", "600"] });
          // Sidecars are runc's and crun's: not the host runtime's, not runsc's.
          if (v.oci === undefined || v.oci === RUNSC) {
            // The host runtime and runsc have no sidecars: the SDK gets the router's refusal.
            await assert.rejects(create(), (e: { code?: number }) => {
              assert.equal(e.code, grpc.status.FAILED_PRECONDITION, String(e));
              return true;
            });
            return;
          }
          const side = await create();
          const p = await side.exec(["cat", "/etc/marker"]);
          assert.equal(await p.stdout.readText(), "sidecar image\n");
          assert.equal(await p.wait(), 0);
          assert.equal(await side.filesystem.readText("/etc/marker"), "sidecar image\n");
          const listed = (await sb.experimentalSidecars.list()).map((c) => c.containerName);
          assert.deepEqual(listed, ["side"]);
          assert.equal(await side.poll(), null);
          await side.terminate();
          // TERMINATED, which the SDK reports as 137.
          assert.equal(await side.wait(), 137);
        } finally {
          await s.cleanup();
        }
      });

      it("images: a directory the task wrote (under /tmp in a container), snapshotted and mounted", async () => {
        const fs = sb.filesystem;
        // The host runtime snapshots and mounts only inside the task's own directory.
        const dir = v.oci ? tmpBase : base;
        const src = `${dir}/snap-src`;
        await fs.makeDirectory(`${src}/sub`, { createParents: true });
        await fs.writeText("one", `${src}/a.txt`);
        await fs.writeText("two", `${src}/sub/b.txt`);
        const image = await sb.snapshotDirectory(src);
        assert.match(image.imageId, /\S/);
        const target = `${dir}/mounted`;
        await fs.makeDirectory(target);
        await sb.mountImage(target, image);
        try {
          assert.equal(await fs.readText(`${target}/a.txt`), "one");
          assert.equal(await fs.readText(`${target}/sub/b.txt`), "two");
        } finally {
          await sb.unmountImage(target);
        }
        assert.deepEqual(await fs.listFiles(target), []);
      });
    });
  }
