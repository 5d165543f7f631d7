/**
 * Customer-supplied encryption keys (PROTOCOL-LATER §5.7, issue 12 part 6)
 * through the independent grpc-js + proto-loader stack, on the host runtime
 * and on runc: a snapshot with a key is a sealed image (contents and tree
 * encrypted at rest, blobs keyed per image), mounting needs the same key,
 * refusals mount nothing, and the key never shows in errors or logs.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { lstat, mkdir, readdir, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { ImagesAdminClient } from "../src/client/images.ts";
import { mountsUnder } from "../src/runtime/runc/mounts.ts";
import type { RuncRuntime } from "../src/runtime/runc/runc-runtime.ts";
import { makeTree, overlaySkipReason } from "./helpers/images.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { cleanupRunc, OCI_RUNTIMES, runcSkipReason } from "./helpers/runc.ts";
import { readTree } from "./helpers/tree.ts";
import { expectStatus, FD, grpc, STDERR, STDOUT, WireClient } from "./helpers/wire-client.ts";

const K1 = randomBytes(32);
const K2 = randomBytes(32);
const K3 = randomBytes(48);
const MARK = randomBytes(8).toString("hex");
/** Plaintext that must never be found at rest: file content, names, a link target. */
const SECRETS = [`content-${MARK}`, `name-${MARK}`, `target-${MARK}`, `dirname-${MARK}`];

/** Every textual form a key could leak in. */
function forms(key: Buffer): string[] {
  return [key.toString("hex"), key.toString("base64"), key.toString("latin1").slice(0, 12)].map(
    (f) => f.slice(0, 16),
  );
}

/** A tree with `makeTree`'s entries plus names, content and a link target that carry MARK. */
async function secretTree(dir: string): Promise<void> {
  await makeTree(dir);
  await mkdir(join(dir, `dirname-${MARK}`));
  await writeFile(join(dir, `dirname-${MARK}`, `name-${MARK}`), `content-${MARK}\n`.repeat(100));
  await symlink(`target-${MARK}`, join(dir, "link-secret"));
}

/** Every file under `dir` on `dir`'s own filesystem (mounts below are skipped), with its name. */
async function filesAtRest(dir: string): Promise<string[]> {
  const dev = (await lstat(dir)).dev;
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const n of await readdir(d)) {
      const p = join(d, n);
      const st = await lstat(p);
      if (st.dev !== dev) continue;
      out.push(p);
      if (st.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return out;
}

const variants: { label: string; oci: string | undefined; skip: string | undefined }[] = [
  { label: "host runtime", oci: undefined, skip: overlaySkipReason() },
];
for (const o of OCI_RUNTIMES) {
  const skip = overlaySkipReason() ?? (await runcSkipReason(o.binary));
  variants.push({ label: `runc runtime, ${o.label}`, oci: o.binary, skip });
}

for (const v of variants) {
  describe(`customer-supplied encryption keys (${v.label})`, { skip: v.skip }, () => {
    let r: TestRouter;
    let w: WireClient;
    let task: string;
    /** The task's path for a name, and where the router's host sees it. */
    let taskPath: (name: string) => string;
    let hostPath: (name: string) => string;
    const logs: string[] = [];

    before(async () => {
      const log = pino({ level: "trace" }, { write: (s: string) => void logs.push(s) });
      r = await startRouter(v.oci ? { runtime: "runc", ociRuntime: v.oci } : {}, log);
      w = new WireClient(r.address);
      task = await r.newTask();
      if (v.oci) {
        const rootfs = (r.daemon.tasks.get(task).runtime as RuncRuntime).rootfs(task);
        taskPath = (n) => `/root/csek/${n}`;
        hostPath = (n) => join(rootfs, taskPath(n));
      } else {
        const base = join(r.dataDir, "tasks", task, "work", "csek");
        taskPath = (n) => join(base, n);
        hostPath = taskPath;
      }
      await mkdir(hostPath(""), { recursive: true });
    });
    after(async () => {
      w?.close();
      if (!r) return;
      for (const t of r.daemon.tasks.list()) await r.daemon.tasks.terminate(t.id).catch(() => {});
      if (v.oci) await cleanupRunc(r.dataDir, v.oci);
      await r.close();
    });

    const snapshot = async (name: string, key?: Buffer, snapshot_id = "") => {
      const req: Record<string, unknown> = { task_id: task, path: Buffer.from(taskPath(name)) };
      if (key) req.customer_supplied_encryption_key = key;
      if (snapshot_id) req.snapshot_id = snapshot_id;
      return (await w.unary("TaskSnapshotDirectory", req)).image_id as string;
    };
    const mount = async (name: string, image_id: string, key?: Buffer) => {
      const req: Record<string, unknown> = {
        task_id: task,
        path: Buffer.from(taskPath(name)),
        image_id,
      };
      if (key) req.customer_supplied_encryption_key = key;
      await w.unary("TaskMountDirectory", req);
    };
    const unmount = (name: string) =>
      w.unary("TaskUnmountDirectory", { task_id: task, path: Buffer.from(taskPath(name)) });
    /** Runs `sh -c script` in the task; its stdout once it exited 0. */
    const sh = async (script: string) => {
      const exec_id = randomUUID();
      await w.start({
        task_id: task,
        exec_id,
        command_args: ["sh", "-c", script],
        stdout_config: STDOUT.PIPE,
        stderr_config: STDERR.PIPE,
      });
      assert.deepEqual(await w.wait(task, exec_id), { code: 0 });
      return (
        await w.readAll({ task_id: task, exec_id, file_descriptor: FD.STDOUT })
      ).data.toString();
    };
    /** Asserts a call fails with `code` and its details hold no form of any key. */
    const refused = async (p: Promise<unknown>, code: grpc.status, re?: RegExp) => {
      const err = await expectStatus(p, code, re);
      for (const key of [K1, K2, K3]) {
        for (const f of forms(key)) assert.ok(!err.details.includes(f), "a key is never echoed");
      }
    };
    const sealedBlobs = async (id: string) =>
      (await readdir(join(r.dataDir, "images", "sealed", id, "blobs"))).sort();
    const blobHashes = async (dir: string) => {
      const out = new Set<string>();
      for (const n of await readdir(dir)) {
        out.add(
          createHash("sha256")
            .update(await readFile(join(dir, n)))
            .digest("hex"),
        );
      }
      return out;
    };

    let sealedId: string;

    it("snapshot with a key, mount with the same key: the byte-exact tree, seen by the task", async () => {
      await secretTree(hostPath("src"));
      sealedId = await snapshot("src", K1);
      assert.match(sealedId, /^im-[0-9a-f]{32}$/);
      await mount("dst", sealedId, K1);
      try {
        assert.deepEqual(
          await readTree(hostPath("dst"), { withTimes: true }),
          await readTree(hostPath("src"), { withTimes: true }),
        );
        const seen = await sh(
          `cat '${taskPath("dst")}/hello.txt'; readlink '${taskPath("dst")}/link-secret'`,
        );
        assert.equal(seen, `hello world\ntarget-${MARK}\n`);
        // Writes land in the mount (in memory); a keyed snapshot of it round-trips too.
        await sh(`echo more > '${taskPath("dst")}/more' && rm '${taskPath("dst")}/secret'`);
        const next = await snapshot("dst", K1);
        await mount("dst2", next, K1);
        assert.deepEqual(
          await readTree(hostPath("dst2"), { withTimes: true }),
          await readTree(hostPath("dst"), { withTimes: true }),
        );
        await unmount("dst2");
      } finally {
        await unmount("dst");
      }
      // The same tree with the same key is the same image.
      assert.equal(await snapshot("src", K1), sealedId);
    });

    it("at rest: no plaintext content, name or link target in the image store, mounted or not", async () => {
      const scan = async () => {
        const files = await filesAtRest(join(r.dataDir, "images"));
        assert.ok(files.some((f) => f.includes(`/sealed/${sealedId}/blobs/`)));
        for (const f of files) {
          for (const s of SECRETS) assert.ok(!f.includes(s), `${f} names ${s}`);
          if ((await lstat(f)).isFile()) {
            const bytes = await readFile(f);
            for (const s of SECRETS) assert.ok(!bytes.includes(s), `${f} holds ${s}`);
          }
        }
      };
      await scan();
      await mount("scan", sealedId, K1);
      try {
        await scan(); // the decrypted layer is a tmpfs: not at rest
      } finally {
        await unmount("scan");
      }
    });

    it("no key, a wrong key, a malformed key: refused, nothing mounted", async () => {
      const before = (await mountsUnder(r.dataDir)).length;
      await refused(mount("nokey", sealedId), grpc.status.FAILED_PRECONDITION, /encrypted/);
      await refused(mount("wrong", sealedId, K2), grpc.status.PERMISSION_DENIED, /does not open/);
      await refused(mount("long", sealedId, K3), grpc.status.PERMISSION_DENIED);
      for (const bad of [randomBytes(15), randomBytes(513), Buffer.alloc(0)]) {
        await refused(mount("bad", sealedId, bad), grpc.status.INVALID_ARGUMENT, /16 to 512/);
        await refused(snapshot("src", bad), grpc.status.INVALID_ARGUMENT, /16 to 512/);
      }
      await refused(mount("empty", "", K1), grpc.status.INVALID_ARGUMENT, /image_id/);
      const plain = await snapshot("src");
      await refused(mount("plain", plain, K1), grpc.status.FAILED_PRECONDITION, /not encrypted/);
      for (const n of ["nokey", "wrong", "long", "bad", "empty", "plain"]) {
        await assert.rejects(lstat(hostPath(n)), { code: "ENOENT" }, `${n} was not created`);
      }
      assert.equal(r.daemon.images.mounts.list(task).length, 0);
      assert.equal((await mountsUnder(r.dataDir)).length, before);
    });

    it("snapshot_id: a repeat needs the same key; with no key it is another snapshot", async () => {
      const sid = randomUUID();
      const id = await snapshot("src", K1, sid);
      assert.equal(id, sealedId);
      assert.equal(await snapshot("src", K1, sid), id);
      await refused(snapshot("src", K2, sid), grpc.status.PERMISSION_DENIED);
      await refused(snapshot("src", undefined, sid), grpc.status.ALREADY_EXISTS);
    });

    it("no shared blob between keys, nor with a plain image; per image even with one key", async () => {
      const other = await snapshot("src", K2);
      assert.notEqual(other, sealedId);
      const a = await sealedBlobs(sealedId);
      const b = await sealedBlobs(other);
      assert.ok(a.length > 0);
      assert.deepEqual(
        a.filter((n) => b.includes(n)),
        [],
      );
      const plainDir = join(r.dataDir, "images", "blobs", "sha256");
      const plain = await readdir(plainDir);
      assert.deepEqual(
        a.filter((n) => plain.includes(n)),
        [],
      );
      const dir = (id: string) => join(r.dataDir, "images", "sealed", id, "blobs");
      const [ha, hb, hp] = [
        await blobHashes(dir(sealedId)),
        await blobHashes(dir(other)),
        await blobHashes(plainDir),
      ];
      assert.deepEqual(
        [...ha].filter((h) => hb.has(h) || hp.has(h)),
        [],
      );
      // Another tree with a file in common, under the same key: still nothing shared.
      await mkdir(hostPath("src3"));
      await writeFile(join(hostPath("src3"), "hello.txt"), "hello world\n");
      const third = await snapshot("src3", K1);
      const c = await sealedBlobs(third);
      assert.equal(c.length, 1);
      assert.deepEqual(
        c.filter((n) => a.includes(n)),
        [],
      );
    });

    it("export and registry push refuse a sealed image; list, inspect, gc and delete handle it", async () => {
      const admin = new ImagesAdminClient(r.client);
      const listed = (await admin.list()).find((i) => i.imageId === sealedId);
      assert.ok(listed, "listed");
      assert.equal(listed.encrypted, true);
      const inspected = await admin.inspect(sealedId, true);
      assert.deepEqual(inspected.entries, []);
      await assert.rejects(admin.export(sealedId), /encrypted/);
      await assert.rejects(r.daemon.images.pushImage(sealedId), /encrypted|registry/);
      await admin.gc();
      assert.ok((await sealedBlobs(sealedId)).length > 0, "gc keeps a live sealed image");
      const victim = await snapshot("src3", K3);
      await admin.delete(victim);
      await assert.rejects(lstat(join(r.dataDir, "images", "sealed", victim)), { code: "ENOENT" });
    });

    it("the keys never appear in the router's log output", () => {
      assert.ok(logs.length > 0, "the router logged something");
      const all = logs.join("");
      for (const key of [K1, K2, K3]) {
        for (const f of forms(key)) assert.ok(!all.includes(f), "a key form is in the log");
      }
    });
  });
}
