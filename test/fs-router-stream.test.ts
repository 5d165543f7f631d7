import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type Entry,
  fails,
  GiB,
  KiB,
  MiB,
  ok,
  okJson,
  pseudoRandom,
  SdkFs,
  shell,
  startVariant,
  taskBase,
  VARIANTS,
  variantSkip,
  type WatchEvent,
  zerosSha256,
} from "./helpers/fs-sdk.ts";
import type { TestRouter } from "./helpers/router.ts";
import { expectStatus, grpc, WireClient } from "./helpers/wire-client.ts";
import { openStdinStream } from "./helpers/wire-stream.ts";

/**
 * The stdin and stdout paths of modal-sandbox-fs-tools through the router
 * (../shared/FS-TOOLS.md §6), the SDK way: WriteFile streaming (its early
 * error, 256 MiB), Watch stopped by EOF, large reads read after Wait, and a
 * router with a small output cap. On every runtime of the conformance suite.
 */

const KINDS = [
  "Access",
  "Create",
  "Modify",
  "Remove",
  "Unknown",
  "Rename",
  "RenameFrom",
  "RenameTo",
];

for (const v of VARIANTS) {
  const skip = await variantSkip(v);
  describe(`fs helper through the router: streams (${v.label})`, { skip }, () => {
    let r: TestRouter;
    let wire: WireClient;
    let fs: SdkFs;
    let task: string;
    let base: string;

    before(async () => {
      r = await startVariant(v);
      wire = new WireClient(r.address);
      task = await r.newTask();
      fs = new SdkFs(wire, task);
      base = taskBase(r, v, task);
      await shell(wire, task, `mkdir -p '${base}'`);
    });
    after(async () => {
      wire?.close();
      await r?.close();
    });

    it("WriteFile onto a directory ends with the helper's IsDirectory while the client streams", async (t) => {
      const dir = `${base}/a-dir`;
      await shell(wire, task, `mkdir -p '${dir}/kept'`);
      // Up to 1 GiB offered, lazily: the helper exits before reading any of it.
      let offered = 0;
      async function* source(): AsyncGenerator<Buffer> {
        const block = Buffer.alloc(4 * MiB, 0x61);
        while (offered < GiB) {
          offered += block.length;
          yield block;
        }
      }
      const res = await fs.writeFile(dir, source());
      fails(res, "IsDirectory", dir);
      t.diagnostic(
        `stdin stream: ${res.streamCode === undefined ? "OK" : grpc.status[res.streamCode]}, ${offered / MiB} MiB offered`,
      );
      const st = okJson<Entry>(await fs.run({ Stat: { path: dir } }));
      assert.equal(st.type, "directory");
      assert.deepEqual(
        okJson<Entry[]>(await fs.run({ ListFiles: { path: dir } })).map((e) => e.name),
        ["kept"],
      );
    });

    it("a 256 MiB WriteFile reads back with the same sha256", async () => {
      const path = `${base}/big/256m.bin`;
      const total = 256 * MiB;
      const sent = createHash("sha256");
      try {
        const w = await fs.writeFile(path, pseudoRandom("fs-router 256 MiB", total, sent));
        assert.equal(ok(w).length, 0);
        assert.equal(w.streamCode, undefined);
        const want = sent.digest("hex");
        assert.equal(okJson<Entry>(await fs.run({ Stat: { path } })).size, total);
        const back = await fs.runHashed({ ReadFile: { path } });
        assert.deepEqual(back.exit, { code: 0 }, back.stderr);
        assert.equal(back.stderr, "");
        assert.equal(back.out.length, total);
        assert.equal(back.out.sha256, want);
      } finally {
        await shell(wire, task, `rm -f '${path}'`);
      }
    });

    it("Watch sees create, modify, rename and remove made by other execs, and exits 0 on stdin EOF", async () => {
      const dir = `${base}/watched`;
      await shell(wire, task, `mkdir -p '${dir}'`);
      const w = (await shell(wire, task, `realpath '${dir}'`)).trim();
      const watch = await fs.watch(dir);
      let failure: unknown;
      try {
        // Ready once a probe file's creation is reported (the SDKs have no readiness signal).
        const deadline = Date.now() + 60_000;
        for (let i = 0; ; i++) {
          await shell(wire, task, `: > '${dir}/.probe-${i}'`);
          const seen = () => watch.events.some((e) => e.paths[0]?.startsWith(`${w}/.probe-`));
          for (let j = 0; j < 40 && !seen(); j++) await sleep(25);
          if (seen()) break;
          assert.ok(Date.now() < deadline, `the watch never reported a probe: ${watch.lines}`);
        }
        const is =
          (type: string, ...paths: string[]) =>
          (e: WatchEvent) =>
            e.event_type === type && JSON.stringify(e.paths) === JSON.stringify(paths);
        let at = watch.events.length;
        await shell(wire, task, `: > '${dir}/f1'`);
        at = await watch.until(is("Create", `${w}/f1`), "Create f1", at);
        await shell(wire, task, `printf more >> '${dir}/f1'`);
        at = await watch.until(is("Modify", `${w}/f1`), "Modify f1", at + 1);
        await shell(wire, task, `mv '${dir}/f1' '${dir}/f2'`);
        at = await watch.until(is("Rename", `${w}/f1`, `${w}/f2`), "Rename f1 f2", at + 1);
        await shell(wire, task, `rm '${dir}/f2'`);
        await watch.until(is("Remove", `${w}/f2`), "Remove f2", at + 1);
      } catch (err) {
        failure = err;
      }
      // Stopped the SDK way in every case; a failure above is reported first.
      const end = await watch.stop().catch((err: unknown) => {
        throw failure ?? err;
      });
      if (failure) throw failure;
      assert.deepEqual(end.exit, { code: 0 }, end.stderr);
      assert.equal(end.stderr, "");
      assert.equal(end.partial, "", "stdout ends with a whole line");
      for (const e of watch.events) {
        assert.deepEqual(Object.keys(e), ["event_type", "paths"]);
        assert.ok(KINDS.includes(e.event_type), e.event_type);
        assert.ok(
          e.paths.length > 0 && e.paths.every((p) => p.startsWith(`${w}/`)),
          String(e.paths),
        );
      }
    });

    it("a WriteFile stream cut before `end` leaves stdin open and the target untouched; resuming completes it", async () => {
      const dir = `${base}/cut`;
      const path = `${dir}/target`;
      await shell(wire, task, `mkdir -p '${dir}' && printf orig > '${path}'`);
      const data = Buffer.alloc(3 * MiB, 0x42);
      const id = await fs.start({ WriteFile: { path } });
      const s = openStdinStream(wire);
      await s.send({ start: { task_id: task, exec_id: id, offset: 0 } });
      for (let p = 0; p < MiB; p += 256 * KiB)
        await s.send({ data: data.subarray(p, p + 256 * KiB) });
      // What the JS and Go SDKs do when their source fails: abort without `end`.
      s.cancel();
      await expectStatus(s.result, grpc.status.CANCELLED);
      // The status call also evicts the cut stream, so nothing of it lands after.
      const st = await wire.unary("TaskExecStdinStatus", { task_id: task, exec_id: id });
      assert.equal(st.closed, false, "a cut stream closed stdin");
      const written = Number(st.num_bytes_written);
      assert.ok(written <= MiB, `${written} bytes written`);
      assert.equal(await wire.poll(task, id), undefined, "the helper stopped waiting for EOF");
      assert.equal(ok(await fs.run({ ReadFile: { path } })).toString(), "orig");
      // Resumed at the router's offset, as the SDKs resume.
      const s2 = openStdinStream(wire);
      await s2.send({ start: { task_id: task, exec_id: id, offset: written } });
      for (let p = written; p < data.length; p += 256 * KiB) {
        await s2.send({ data: data.subarray(p, Math.min(p + 256 * KiB, data.length)) });
      }
      await s2.send({ end: {} });
      await s2.finish();
      ok(await fs.finish(id));
      assert.ok(ok(await fs.run({ ReadFile: { path } })).equals(data), "content after the resume");
      assert.deepEqual(
        okJson<Entry[]>(await fs.run({ ListFiles: { path: dir } })).map((e) => e.name),
        ["target"],
        "a staging file was left",
      );
    });

    // Once, on runc (the production runtime: the helper under the task's seccomp filter and
    // overlay, its output through the agent's detached mount); 2 GiB take ~20 s.
    const bigSkip =
      v.oci === "runc" ? false : "the 2 GiB read runs on the runc runtime only (slow)";
    it("a 2 GiB ReadFile read after Wait (as the SDKs do) comes back whole", {
      skip: bigSkip,
    }, async () => {
      const path = `${base}/two-gib`;
      await shell(wire, task, `truncate -s 2G '${path}'`);
      try {
        // runHashed waits for the exit first, then reads stdout, hashing it as it streams.
        const res = await fs.runHashed({ ReadFile: { path } });
        assert.deepEqual(res.exit, { code: 0 }, res.stderr);
        assert.equal(res.stderr, "");
        assert.equal(res.out.length, 2 * GiB);
        assert.equal(res.out.sha256, zerosSha256(2 * GiB));
      } finally {
        await shell(wire, task, `rm -f '${path}'`);
      }
    });
  });

  describe(`fs helper through a router with an 8 MiB output cap (${v.label})`, { skip }, () => {
    let r: TestRouter;
    let wire: WireClient;
    let fs: SdkFs;
    let task: string;
    let base: string;

    before(async () => {
      r = await startVariant(v, { outputCap: 8 * MiB });
      wire = new WireClient(r.address);
      task = await r.newTask();
      fs = new SdkFs(wire, task);
      base = taskBase(r, v, task);
      await shell(wire, task, `mkdir -p '${base}'`);
    });
    after(async () => {
      wire?.close();
      await r?.close();
    });

    it("refuses a 64 MiB ReadFile (and /dev/zero) with FileTooLarge instead of stalling; a small one still reads", async () => {
      await shell(
        wire,
        task,
        `truncate -s 64M '${base}/64m' && head -c 1048576 /dev/zero > '${base}/1m'`,
      );
      const res = await fs.runHashed({ ReadFile: { path: `${base}/64m` } });
      fails(res, "FileTooLarge", `${base}/64m`);
      assert.equal(res.out.length, 0, "stdout of a refused read");
      // A file whose size understates its content: refused once past the limit, not stalled.
      fails(await fs.runHashed({ ReadFile: { path: "/dev/zero" } }), "FileTooLarge", "/dev/zero");
      const small = await fs.runHashed({ ReadFile: { path: `${base}/1m` } });
      assert.deepEqual(small.exit, { code: 0 }, small.stderr);
      assert.equal(small.out.length, MiB);
      assert.equal(small.out.sha256, zerosSha256(MiB));
    });
  });
}
