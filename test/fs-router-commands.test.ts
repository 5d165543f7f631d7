import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import {
  type Entry,
  fails,
  GiB,
  ok,
  okJson,
  SdkFs,
  shell,
  startVariant,
  taskBase,
  VARIANTS,
  variantSkip,
} from "./helpers/fs-sdk.ts";
import type { TestRouter } from "./helpers/router.ts";
import { WireClient } from "./helpers/wire-client.ts";

/**
 * Every command of modal-sandbox-fs-tools (../shared/FS-TOOLS.md) and its
 * error kinds, driven through the router exactly as Modal's SDKs drive it
 * (test/helpers/fs-sdk.ts over the independent grpc-js client), on every
 * runtime of the conformance suite.
 */

/**
 * lstat of each path, by `find -printf` in the task (coreutils' `stat` uses
 * statx flags gVisor refuses): what an entry must say.
 */
async function statInTask(client: WireClient, task: string, paths: string[]) {
  const out = await shell(
    client,
    task,
    `find ${paths.map((p) => `'${p}'`).join(" ")} -maxdepth 0 -printf '%y|%m|%u|%g|%T@|%s\\n'`,
  );
  const typeBits: Record<string, number> = { f: 0o100000, d: 0o040000, l: 0o120000 };
  return out
    .trim()
    .split("\n")
    .map((l) => {
      const [y = "", m = "", u, g, t, s] = l.split("|");
      return {
        mode: (typeBits[y] ?? 0) | Number.parseInt(m, 8),
        permissions: m.padStart(4, "0"),
        owner: u,
        group: g,
        mtime: Number(t),
        size: Number(s),
      };
    });
}

/** Asserts the JSON types FS-TOOLS.md §3 requires of every entry field. */
function assertEntryTypes(e: Entry): void {
  assert.deepEqual(
    Object.keys(e).sort(),
    [
      "group",
      "mode",
      "modified_time",
      "name",
      "owner",
      "path",
      "permissions",
      "size",
      "symlink_target",
      "type",
    ],
    JSON.stringify(e),
  );
  for (const k of ["name", "path", "owner", "group", "permissions"] as const) {
    assert.equal(typeof e[k], "string", `${k} of ${JSON.stringify(e)}`);
  }
  assert.ok(["file", "directory", "symlink"].includes(e.type), e.type);
  assert.ok(Number.isInteger(e.size) && e.size >= 0, `size of ${e.name}`);
  assert.ok(Number.isInteger(e.mode) && e.mode >= 0 && e.mode < 2 ** 32, `mode of ${e.name}`);
  assert.match(e.permissions, /^\d{4}$/);
  assert.equal(typeof e.modified_time, "number");
  assert.ok(e.symlink_target === null || typeof e.symlink_target === "string");
}

for (const v of VARIANTS) {
  const skip = await variantSkip(v);
  describe(`fs helper through the router: commands (${v.label})`, { skip }, () => {
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

    it("MakeDirectory, ListFiles (sorted, typed entries), Stat and Remove succeed as the SDKs read them", async () => {
      const d = `${base}/cmds`;
      // MakeDirectory: parents (default true) created; no stdout.
      assert.equal(
        ok(await fs.run({ MakeDirectory: { path: `${d}/sub/deep`, parents: true } })).length,
        0,
      );
      assert.equal(
        ok(await fs.run({ MakeDirectory: { path: `${d}/one`, parents: false } })).length,
        0,
      );
      // Idempotent on an existing directory with parents.
      ok(await fs.run({ MakeDirectory: { path: `${d}/sub`, parents: true } }));
      await shell(
        wire,
        task,
        `cd '${d}' && printf hello > b.txt && printf x > C && printf '' > empty && ln -s b.txt z-link && printf e > 'é' && chmod 0640 b.txt && chmod 1777 one`,
      );

      const list = okJson<Entry[]>(await fs.run({ ListFiles: { path: d } }));
      assert.ok(Array.isArray(list));
      const names = list.map((e) => e.name);
      // Sorted ascending in byte order ("C" < "b.txt"; the UTF-8 "é" last); not recursive.
      assert.deepEqual(names, ["C", "b.txt", "empty", "one", "sub", "z-link", "é"]);
      for (const e of list) {
        assertEntryTypes(e);
        assert.equal(e.path, `${d}/${e.name}`);
      }
      const st = await statInTask(
        wire,
        task,
        list.map((e) => e.path),
      );
      list.forEach((e, i) => {
        const s = st[i];
        assert.ok(s, `stat of ${e.name}`);
        assert.equal(e.mode, s.mode, `mode of ${e.name}`);
        assert.equal(e.permissions, s.permissions, `permissions of ${e.name}`);
        assert.equal(e.owner, s.owner, `owner of ${e.name}`);
        assert.equal(e.group, s.group, `group of ${e.name}`);
        assert.equal(e.size, s.size, `size of ${e.name}`);
        assert.ok(Math.abs(e.modified_time - s.mtime) <= 1, `mtime of ${e.name}`);
      });
      const by = new Map(list.map((e) => [e.name, e]));
      assert.equal(by.get("b.txt")?.type, "file");
      assert.equal(by.get("b.txt")?.size, 5);
      assert.equal(by.get("b.txt")?.permissions, "0640");
      assert.equal(by.get("one")?.type, "directory");
      assert.equal(by.get("one")?.permissions, "1777");
      assert.equal(by.get("z-link")?.type, "symlink");
      assert.equal(by.get("z-link")?.symlink_target, "b.txt");
      assert.equal(by.get("b.txt")?.symlink_target, null);

      // An empty directory lists as [].
      assert.deepEqual(okJson<Entry[]>(await fs.run({ ListFiles: { path: `${d}/one` } })), []);

      // Stat: the path as given, lstat semantics (the link itself).
      const sf = okJson<Entry>(await fs.run({ Stat: { path: `${d}/b.txt` } }));
      assertEntryTypes(sf);
      assert.deepEqual([sf.name, sf.path, sf.type, sf.size], ["b.txt", `${d}/b.txt`, "file", 5]);
      assert.equal(sf.mode, 0o100640);
      const sl = okJson<Entry>(await fs.run({ Stat: { path: `${d}/z-link` } }));
      assert.deepEqual([sl.type, sl.symlink_target], ["symlink", "b.txt"]);
      const sd = okJson<Entry>(await fs.run({ Stat: { path: `${d}/sub/` } }));
      assert.deepEqual([sd.name, sd.path, sd.type], ["sub", `${d}/sub/`, "directory"]);

      // Remove: a file, a symlink (its target kept), an empty dir, a tree.
      assert.equal(ok(await fs.run({ Remove: { path: `${d}/C`, recursive: false } })).length, 0);
      ok(await fs.run({ Remove: { path: `${d}/z-link`, recursive: false } }));
      ok(await fs.run({ Remove: { path: `${d}/one`, recursive: false } }));
      ok(await fs.run({ Remove: { path: `${d}/sub`, recursive: true } }));
      const left = okJson<Entry[]>(await fs.run({ ListFiles: { path: d } })).map((e) => e.name);
      assert.deepEqual(left, ["b.txt", "empty", "é"]);
      fails(await fs.run({ Stat: { path: `${d}/sub` } }), "NotFound", `${d}/sub`);
    });

    it("ReadFile and WriteFile move exact bytes (0x00 and 0xFF, empty, parents made, overwrite)", async () => {
      const d = `${base}/rw`;
      const bytes = Buffer.from(
        Array.from({ length: 70_000 }, (_, i) => (i * 7 + (i >> 8)) & 0xff),
      );
      bytes[0] = 0x00;
      bytes[1] = 0xff;
      const w = await fs.writeFile(`${d}/new/dir/data.bin`, bytes);
      assert.equal(ok(w).length, 0);
      assert.equal(w.streamCode, undefined);
      assert.deepEqual(ok(await fs.run({ ReadFile: { path: `${d}/new/dir/data.bin` } })), bytes);
      // The task sees the same bytes.
      const sum = await shell(wire, task, `sha256sum '${d}/new/dir/data.bin'`);
      assert.equal(sum.split(" ")[0], createHash("sha256").update(bytes).digest("hex"));
      // Overwrite with less; then an empty write gives an empty file.
      ok(await fs.writeFile(`${d}/new/dir/data.bin`, Buffer.from("short")));
      assert.equal(
        ok(await fs.run({ ReadFile: { path: `${d}/new/dir/data.bin` } })).toString(),
        "short",
      );
      ok(await fs.writeFile(`${d}/empty`, Buffer.alloc(0)));
      assert.equal(ok(await fs.run({ ReadFile: { path: `${d}/empty` } })).length, 0);
      assert.equal(okJson<Entry>(await fs.run({ Stat: { path: `${d}/empty` } })).size, 0);
    });

    it("reports NotFound, NotDirectory/IsFile, IsDirectory, PathAlreadyExists and DirectoryNotEmpty", async () => {
      const d = `${base}/errs`;
      await shell(wire, task, `mkdir -p '${d}/full/x' '${d}/dir' && printf f > '${d}/file'`);
      const missing = `${d}/missing`;
      for (const cmd of [
        { ListFiles: { path: missing } },
        { Stat: { path: missing } },
        { ReadFile: { path: missing } },
        { Remove: { path: missing, recursive: false } },
        { MakeDirectory: { path: `${missing}/child`, parents: false } },
        { Watch: { path: missing, recursive: false, filter: null, timeout_secs: null } },
      ]) {
        fails(await fs.run(cmd), "NotFound", missing);
      }
      const through = `${d}/file/x`;
      fails(await fs.run({ ListFiles: { path: through } }), "NotDirectory", through);
      fails(await fs.run({ Stat: { path: through } }), "NotDirectory", through);
      fails(
        await fs.run({ MakeDirectory: { path: `${through}/y`, parents: true } }),
        "NotDirectory",
      );
      fails(await fs.run({ ListFiles: { path: `${d}/file` } }), "IsFile", `${d}/file`);
      const rd = await fs.run({ ReadFile: { path: `${d}/dir` } });
      fails(rd, "IsDirectory", `${d}/dir`);
      assert.equal(rd.stdout.length, 0);
      for (const parents of [true, false]) {
        fails(
          await fs.run({ MakeDirectory: { path: `${d}/file`, parents } }),
          "PathAlreadyExists",
          `${d}/file`,
        );
      }
      fails(
        await fs.run({ MakeDirectory: { path: `${d}/dir`, parents: false } }),
        "PathAlreadyExists",
      );
      fails(await fs.run({ Remove: { path: `${d}/full`, recursive: false } }), "DirectoryNotEmpty");
      // Nothing was removed by the refusal.
      assert.equal(
        okJson<Entry>(await fs.run({ Stat: { path: `${d}/full/x` } })).type,
        "directory",
      );
    });

    it("answers malformed JSON and a relative path with InvalidArgument", async () => {
      for (const arg of ['{"Stat":', "not json", '{"NoSuchCommand":{"path":"/"}}', "[]"]) {
        fails(await fs.run(arg), "InvalidArgument");
      }
      fails(await fs.run({ Stat: { path: "relative/path" } }), "InvalidArgument");
      fails(await fs.run({ ReadFile: { path: "x" } }), "InvalidArgument");
    });

    it("refuses a 6 GiB sparse file with FileTooLarge and no stdout", async () => {
      const big = `${base}/big-6g`;
      await shell(wire, task, `truncate -s 6G '${big}'`);
      try {
        assert.equal(okJson<Entry>(await fs.run({ Stat: { path: big } })).size, 6 * GiB);
        const res = await fs.runHashed({ ReadFile: { path: big } });
        fails(res, "FileTooLarge", big);
        assert.equal(res.out.length, 0, "stdout of a refused read");
      } finally {
        await shell(wire, task, `rm -f '${big}'`);
      }
    });

    it("reports PermissionDenied for a filesystem that refuses (mkdir and create under /sys)", async () => {
      // The helper runs as root in every runtime here: a read-only or
      // pseudo filesystem is where it can be refused (EROFS / EPERM / EACCES).
      fails(
        await fs.run({ MakeDirectory: { path: "/sys/fs-router-denied", parents: true } }),
        "PermissionDenied",
        "/sys/fs-router-denied",
      );
      const w = await fs.writeFile("/sys/fs-router-denied-file", Buffer.from("x"));
      fails(w, "PermissionDenied", "/sys/fs-router-denied-file");
    });

    it("reports PermissionDenied for an unreadable file when the helper is not root", async (t) => {
      const uid = (await shell(wire, task, "id -u")).trim();
      if (uid === "0") {
        const why = `the helper runs as root (uid 0) in ${v.label}: file modes cannot refuse it`;
        t.skip(why);
        return;
      }
      const f = `${base}/unreadable`;
      await shell(wire, task, `printf s > '${f}' && chmod 000 '${f}'`);
      fails(await fs.run({ ReadFile: { path: f } }), "PermissionDenied", f);
    });
  });
}
