import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import {
  chmod,
  chown,
  link,
  lstat,
  mkdir,
  open,
  readdir,
  readFile,
  readlink,
  stat,
  symlink,
  truncate,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { afterEach, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { assertAtomicReplacements, contentOf } from "./helpers/atomic-reader.ts";
import { delallocUnobservable, delayedAllocation } from "./helpers/extents.ts";
import {
  type Entry,
  FS_TOOLS,
  fails,
  json,
  killLeftovers,
  matchesStat,
  ok,
  removeTemps,
  requireFsTools,
  run,
  start,
  tempDir,
} from "./helpers/fs-tools.ts";
import { noHolderOfReplaced } from "./helpers/holders.ts";

const NOBODY = { uid: 65534, gid: 65534 };
/** Tests that run the helper as nobody or chown files need root. */
const AS_ROOT =
  process.getuid?.() === 0 ? undefined : "needs root (runs the helper as nobody, chowns files)";
const STRACE = "/usr/bin/strace";
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
/** Python's json.dumps style: ", " and ": ", every non-ASCII UTF-16 unit as \uXXXX. */
const py = (v: unknown) =>
  JSON.stringify(v)
    .replace(/","/g, '", "')
    .replace(/":/g, '": ')
    .replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
/** Go's encoding/json style: `<`, `>`, `&` as \u escapes. */
const go = (v: unknown) =>
  JSON.stringify(v).replace(/[<>&]/g, (c) => `\\u00${c.charCodeAt(0).toString(16)}`);

describe("modal-sandbox-fs-tools (native/fs-tools.c), run directly", () => {
  before(requireFsTools);
  afterEach(async () => {
    killLeftovers();
    await removeTemps();
  });

  it("takes its JSON argument in any key order, spacing and escaping; unknown fields and nulls are defaults", async () => {
    const dir = await tempDir();
    for (const name of ["é", "😀", "<a&b>", 'q"uo\\te']) {
      await writeFile(join(dir, name), name);
      const path = join(dir, name);
      const variants = [
        JSON.stringify({ Stat: { path } }),
        py({ Stat: { path } }),
        go({ Stat: { path } }),
        `\n\t{ "Stat" :\r\n { "future": {"a": [1, -2.5e3, 0, true, false, null, "x", {}]}, "path" : ${py(path).replace(/\//g, "\\/")}, "more": null } }  `,
      ];
      for (const arg of variants) {
        const e = json<Entry>(await run(arg));
        assert.deepEqual([e.name, e.path], [name, path], arg);
      }
    }
    // A missing or null `parents` is true; a missing or null `recursive` is false.
    ok(await run(`{"MakeDirectory":{"path":${JSON.stringify(join(dir, "a/b"))},"parents":null}}`));
    ok(await run({ MakeDirectory: { path: join(dir, "c/d") } }));
    assert.ok(
      (await stat(join(dir, "a/b"))).isDirectory() && (await stat(join(dir, "c/d"))).isDirectory(),
    );
    fails(await run({ Remove: { path: join(dir, "a"), recursive: null } }), "DirectoryNotEmpty");
    fails(await run({ Remove: { path: join(dir, "c") } }), "DirectoryNotEmpty");
  });

  it("answers a malformed argument with InvalidArgument", async () => {
    const bad: unknown[] = [
      [],
      ['{"Stat":{"path":"/"}}', "x"],
      "not json",
      '{"Stat":{"path":"/"}',
      '{"Stat":{"path":"/"}} x',
      "[]",
      "{}",
      '{"Stat":{"path":"/"},"Remove":{"path":"/"}}',
      '{"stat":{"path":"/"}}',
      '{"Stat":null}',
      '{"Stat":{"path":7}}',
      '{"Stat":{"path":"tmp"}}',
      '{"Stat":{"path":""}}',
      '{"Stat":{"path":"/a\\u0000b"}}',
      '{"Stat":{"path":"/\\ud800"}}',
      '{"Stat":{"path":"/\\x"}}',
      '{"Stat":{"path":"/\tb"}}',
      '{"Remove":{"path":"/no-such-thing","recursive":"yes"}}',
      '{"Watch":{"path":"/","filter":"Create","timeout_secs":0}}',
      '{"Watch":{"path":"/","filter":[1],"timeout_secs":0}}',
      '{"Watch":{"path":"/","timeout_secs":"0"}}',
    ];
    for (const arg of bad) fails(await run(arg), "InvalidArgument");
  });

  it("ListFiles: entries sorted by name (bytes), not recursive; [] for an empty directory", async () => {
    const dir = await tempDir();
    const names = ["b", "a", "B", "_", "é", "a.b", "z1", "10", "9", "sub"];
    for (const n of names) if (n !== "sub") await writeFile(join(dir, n), n);
    await mkdir(join(dir, "sub"));
    await writeFile(join(dir, "sub", "deeper"), "");
    const sorted = [...names].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    const list = json<Entry[]>(await run({ ListFiles: { path: dir } }));
    assert.deepEqual(
      list.map((e) => [e.name, e.path]),
      sorted.map((n) => [n, `${dir}/${n}`]),
    );
    // Trailing slashes are dropped before joining; the paths keep the prefix as given.
    const slashed = json<Entry[]>(await run({ ListFiles: { path: `${dir}//` } }));
    assert.deepEqual(
      slashed.map((e) => e.path),
      sorted.map((n) => `${dir}/${n}`),
    );
    assert.deepEqual(json(await run({ ListFiles: { path: await tempDir() } })), []);
    const root = json<Entry[]>(await run({ ListFiles: { path: "/" } }));
    assert.ok(root.some((e) => e.path === "/tmp" && e.name === "tmp"));
  });

  it("ListFiles: NotFound, IsFile, NotDirectory, PermissionDenied", { skip: AS_ROOT }, async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "file"), "x");
    await symlink("nowhere", join(dir, "dangling"));
    await mkdir(join(dir, "closed"), { mode: 0o311 });
    await chmod(dir, 0o755);
    fails(await run({ ListFiles: { path: join(dir, "missing") } }), "NotFound", dir);
    fails(await run({ ListFiles: { path: join(dir, "dangling") } }), "NotFound", dir);
    fails(await run({ ListFiles: { path: join(dir, "file") } }), "IsFile", dir);
    fails(await run({ ListFiles: { path: join(dir, "file/x") } }), "NotDirectory", dir);
    fails(await run({ ListFiles: { path: join(dir, "closed") } }, NOBODY), "PermissionDenied", dir);
  });

  it("ListFiles through a symlinked directory lists the target; paths keep the link's name", async () => {
    const dir = await tempDir();
    await mkdir(join(dir, "real"));
    await writeFile(join(dir, "real", "f"), "x");
    await symlink("real", join(dir, "link"));
    const list = json<Entry[]>(await run({ ListFiles: { path: join(dir, "link") } }));
    assert.deepEqual(
      list.map((e) => [e.name, e.path, e.type]),
      [["f", join(dir, "link", "f"), "file"]],
    );
  });

  it("entries: type, mode, permissions, owner, group, mtime and size as stat -c has them", {
    skip: AS_ROOT,
  }, async () => {
    const dir = await tempDir();
    const p = (n: string) => join(dir, n);
    await writeFile(p("file"), "12345", { mode: 0o644 });
    await writeFile(p("exec"), "", { mode: 0o755 });
    await writeFile(p("setuid"), "");
    await chmod(p("setuid"), 0o4755);
    await mkdir(p("dir"), { mode: 0o755 });
    await mkdir(p("sticky"));
    await chmod(p("sticky"), 0o1777);
    execFileSync("mkfifo", [p("fifo")]);
    await symlink("file", p("rel"));
    await symlink(p("dir"), p("todir"));
    await symlink("nowhere/x", p("dangling"));
    await writeFile(p("nobody"), "");
    await chown(p("nobody"), 65534, 65534);
    await writeFile(p("noname"), "");
    await chown(p("noname"), 12345, 54321);
    execFileSync("touch", ["-h", "-d", "@1234567890.5", p("file")]);
    const list = json<Entry[]>(await run({ ListFiles: { path: dir } }));
    const by = new Map(list.map((e) => [e.name, e]));
    assert.equal(list.length, 11);
    for (const e of list) {
      if (e.name !== "noname") matchesStat(e);
      const link = e.name === "rel" || e.name === "todir" || e.name === "dangling";
      assert.equal(
        e.type,
        link ? "symlink" : e.name === "dir" || e.name === "sticky" ? "directory" : "file",
      );
      assert.equal(e.symlink_target, link ? await readlink(e.path) : null, e.name);
    }
    assert.equal(by.get("dangling")?.symlink_target, "nowhere/x");
    assert.equal(by.get("fifo")?.type, "file");
    assert.equal(by.get("file")?.modified_time, 1234567890.5);
    assert.deepEqual([by.get("file")?.mode, by.get("file")?.permissions], [0o100644, "0644"]);
    assert.deepEqual(
      [by.get("setuid")?.permissions, by.get("sticky")?.permissions],
      ["4755", "1777"],
    );
    assert.deepEqual([by.get("nobody")?.owner, by.get("nobody")?.group], ["nobody", "nogroup"]);
    assert.deepEqual([by.get("noname")?.owner, by.get("noname")?.group], ["12345", "54321"]);
    const devNull = json<Entry>(await run({ Stat: { path: "/dev/null" } }));
    assert.equal(devNull.type, "file");
    matchesStat(devNull);
    execFileSync("touch", ["-h", "-d", "@-1.25", p("rel")]);
    assert.equal(json<Entry>(await run({ Stat: { path: p("rel") } })).modified_time, -1.25);
  });

  it("entries: bytes that are not UTF-8 become U+FFFD in valid JSON; control characters are escaped", async () => {
    const dir = await tempDir();
    const raw = Buffer.concat([
      Buffer.from(`${dir}/f`),
      Buffer.from([0xff, 0xc3]),
      Buffer.from("g"),
    ]);
    await writeFile(raw, "");
    await symlink(Buffer.from([0x61, 0xe9, 0x62]), Buffer.from(`${dir}/link`));
    await writeFile(join(dir, "a\nb\u0001\u007f"), "");
    const r = await run({ ListFiles: { path: dir } });
    const text = new TextDecoder("utf-8", { fatal: true }).decode(ok(r));
    assert.ok(!text.includes("\n") && !text.includes("\u0001"));
    const list = JSON.parse(text) as Entry[];
    assert.deepEqual(
      list.map((e) => [e.name, e.symlink_target]),
      [
        ["a\nb\u0001\u007f", null],
        ["f\ufffd\ufffdg", null],
        ["link", "a\ufffdb"],
      ],
    );
    // Python writes such a name (os.fsdecode) as lone \udcXX escapes: the raw bytes.
    const e = json<Entry>(await run(`{"Stat":{"path":"${dir}/f\\udcff\\udcc3g"}}`));
    assert.equal(e.name, "f\ufffd\ufffdg");
  });

  it("Stat: name and path as given, a symlink described not followed, / named ''", async () => {
    const dir = await tempDir();
    await mkdir(join(dir, "sub"));
    await writeFile(join(dir, "file"), "abc");
    await symlink("sub", join(dir, "link"));
    await symlink("/no/where", join(dir, "dangling"));
    const file = json<Entry>(await run({ Stat: { path: join(dir, "file") } }));
    assert.deepEqual(
      [file.name, file.path, file.type, file.size],
      ["file", join(dir, "file"), "file", 3],
    );
    matchesStat(file);
    const sub = json<Entry>(await run({ Stat: { path: `${dir}//sub/` } }));
    assert.deepEqual([sub.name, sub.path, sub.type], ["sub", `${dir}//sub/`, "directory"]);
    const link = json<Entry>(await run({ Stat: { path: join(dir, "link") } }));
    assert.deepEqual([link.type, link.symlink_target, link.size], ["symlink", "sub", 3]);
    matchesStat(link);
    const dangling = json<Entry>(await run({ Stat: { path: join(dir, "dangling") } }));
    assert.deepEqual([dangling.type, dangling.symlink_target], ["symlink", "/no/where"]);
    const root = json<Entry>(await run({ Stat: { path: "/" } }));
    assert.deepEqual([root.name, root.path, root.type], ["", "/", "directory"]);
    fails(await run({ Stat: { path: join(dir, "missing") } }), "NotFound", dir);
    fails(await run({ Stat: { path: join(dir, "file/x") } }), "NotDirectory", dir);
  });

  it("MakeDirectory: nested, idempotent, 0777 minus the umask", async () => {
    const dir = await tempDir();
    const path = join(dir, "a/b/c");
    assert.equal(ok(await run({ MakeDirectory: { path, parents: true } })).length, 0);
    ok(await run({ MakeDirectory: { path, parents: true } }));
    await symlink("a/b", join(dir, "link"));
    ok(await run({ MakeDirectory: { path: join(dir, "link"), parents: true } }));
    ok(await run({ MakeDirectory: { path: join(dir, "x/y"), parents: true } }, { umask: "027" }));
    for (const p of ["x", "x/y"]) assert.equal((await stat(join(dir, p))).mode & 0o7777, 0o750);
    ok(await run({ MakeDirectory: { path: join(dir, "z"), parents: false } }, { umask: "0" }));
    assert.equal((await stat(join(dir, "z"))).mode & 0o7777, 0o777);
  });

  it("MakeDirectory: PathAlreadyExists, NotFound, NotDirectory, PermissionDenied", {
    skip: AS_ROOT,
  }, async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "file"), "");
    await symlink("nowhere", join(dir, "dangling"));
    await chmod(dir, 0o755);
    for (const parents of [true, false]) {
      fails(
        await run({ MakeDirectory: { path: join(dir, "file"), parents } }),
        "PathAlreadyExists",
        dir,
      );
      fails(
        await run({ MakeDirectory: { path: join(dir, "dangling"), parents } }),
        "PathAlreadyExists",
      );
      fails(
        await run({ MakeDirectory: { path: join(dir, "file/x/y"), parents } }),
        "NotDirectory",
        dir,
      );
    }
    fails(await run({ MakeDirectory: { path: dir, parents: false } }), "PathAlreadyExists", dir);
    fails(
      await run({ MakeDirectory: { path: join(dir, "m/n"), parents: false } }),
      "NotFound",
      dir,
    );
    fails(
      await run({ MakeDirectory: { path: join(dir, "p/q") } }, NOBODY),
      "PermissionDenied",
      dir,
    );
  });

  it("Remove: a file, an empty directory, a tree (its symlinks not followed), a symlink but not its target", async () => {
    const dir = await tempDir();
    const p = (n: string) => join(dir, n);
    await mkdir(p("outside"));
    await writeFile(p("outside/keep"), "k");
    await mkdir(p("tree/a/b"), { recursive: true });
    await writeFile(p("tree/a/b/f"), "");
    await symlink(p("outside"), p("tree/dirlink"));
    await symlink(p("outside/keep"), p("tree/a/filelink"));
    await writeFile(p("file"), "");
    await mkdir(p("empty"));
    await symlink("outside", p("link"));
    for (const [path, recursive] of [
      ["file", false],
      ["empty", false],
      ["tree", true],
      ["link", true],
    ] as const) {
      assert.equal(ok(await run({ Remove: { path: p(path), recursive } })).length, 0);
      await assert.rejects(lstat(p(path)), { code: "ENOENT" });
    }
    assert.deepEqual(await readdir(p("outside")), ["keep"]);
  });

  it("Remove: NotFound, DirectoryNotEmpty, PermissionDenied", { skip: AS_ROOT }, async () => {
    const dir = await tempDir();
    await mkdir(join(dir, "full"));
    await writeFile(join(dir, "full/f"), "");
    await chmod(dir, 0o755);
    fails(await run({ Remove: { path: join(dir, "missing") } }), "NotFound", dir);
    fails(await run({ Remove: { path: join(dir, "full/f/x"), recursive: true } }), "NotFound", dir);
    fails(
      await run({ Remove: { path: join(dir, "full"), recursive: false } }),
      "DirectoryNotEmpty",
      dir,
    );
    fails(await run({ Remove: { path: join(dir, "full/f") } }, NOBODY), "PermissionDenied", dir);
    fails(
      await run({ Remove: { path: join(dir, "full"), recursive: true } }, NOBODY),
      "PermissionDenied",
    );
    assert.deepEqual(await readdir(join(dir, "full")), ["f"]);
  });

  it("ReadFile: the bytes exactly (0x00 and 0xFF included), through a symlink; an empty file gives nothing", async () => {
    const dir = await tempDir();
    const bytes = Buffer.concat([Buffer.from([0, 255, 0, 10, 13]), randomBytes(300_000)]);
    await writeFile(join(dir, "f"), bytes);
    await symlink("f", join(dir, "link"));
    await writeFile(join(dir, "empty"), "");
    assert.ok(ok(await run({ ReadFile: { path: join(dir, "f") } })).equals(bytes));
    assert.ok(ok(await run({ ReadFile: { path: join(dir, "link") } })).equals(bytes));
    assert.equal(ok(await run({ ReadFile: { path: join(dir, "empty") } })).length, 0);
    const big = randomBytes(24 << 20);
    await writeFile(join(dir, "big"), big);
    assert.equal(sha(ok(await run({ ReadFile: { path: join(dir, "big") } }))), sha(big));
  });

  it("ReadFile: NotFound, IsDirectory, PermissionDenied; over 5 GiB FileTooLarge with nothing on stdout", {
    skip: AS_ROOT,
  }, async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "file"), "x");
    await symlink("nowhere", join(dir, "dangling"));
    await symlink(".", join(dir, "dirlink"));
    await writeFile(join(dir, "secret"), "s", { mode: 0o000 });
    await chmod(dir, 0o755);
    for (const n of ["missing", "dangling", "file/x"])
      fails(await run({ ReadFile: { path: join(dir, n) } }), "NotFound", dir);
    for (const n of ["", "dirlink"])
      fails(await run({ ReadFile: { path: join(dir, n) } }), "IsDirectory");
    fails(await run({ ReadFile: { path: join(dir, "secret") } }, NOBODY), "PermissionDenied", dir);
    await writeFile(join(dir, "huge"), "");
    await truncate(join(dir, "huge"), 6 * 2 ** 30); // sparse
    const r = await run({ ReadFile: { path: join(dir, "huge") } });
    const e = fails(r, "FileTooLarge", dir);
    assert.equal(r.stdout.length, 0);
    assert.match(e.message, /6442450944.*5368709120/);
  });

  it("ReadFile and WriteFile through real pipes (splice), and ReadFile's stdout closed early: EPIPE, no crash", async () => {
    const dir = await tempDir();
    const data = randomBytes((8 << 20) + 123);
    await writeFile(join(dir, "src"), data);
    const sh = (script: string, ...args: string[]) =>
      execFileSync("/bin/sh", ["-c", script, FS_TOOLS, ...args]);
    const write = JSON.stringify({ WriteFile: { path: join(dir, "dst") } });
    sh('cat "$2" | "$0" "$1"', write, join(dir, "src"));
    assert.equal(sha(await readFile(join(dir, "dst"))), sha(data));
    const read = JSON.stringify({ ReadFile: { path: join(dir, "dst") } });
    sh('"$0" "$1" | cat > "$2"', read, join(dir, "out"));
    assert.equal(sha(await readFile(join(dir, "out"))), sha(data));
    const s = start({ ReadFile: { path: join(dir, "src") } });
    s.child.stdout?.once("data", () => s.child.stdout?.destroy());
    fails(await s.done, "Io");
  });

  it("WriteFile: exact bytes of 0 B, 4 MiB + 1 KiB and 17 MiB payloads; parents created; nothing else left", async () => {
    const dir = await tempDir();
    for (const size of [0, (4 << 20) + 1024, 17 << 20]) {
      const data = randomBytes(size);
      if (size) {
        data[0] = 0;
        data[size - 1] = 255;
      }
      const path = join(dir, `new/deeper/f${size}`);
      assert.equal(ok(await run({ WriteFile: { path } }, { stdin: data })).length, 0);
      assert.equal(sha(await readFile(path)), sha(data));
    }
    assert.deepEqual((await readdir(join(dir, "new/deeper"))).sort(), [
      "f0",
      "f17825792",
      "f4195328",
    ]);
  });

  it("WriteFile: replacing keeps the mode and owner; new files get 0666 minus the umask; symlinks written through", {
    skip: AS_ROOT,
  }, async () => {
    const dir = await tempDir();
    const p = (n: string) => join(dir, n);
    await writeFile(p("old"), "old content");
    await chmod(p("old"), 0o640);
    await chown(p("old"), 65534, 65534);
    ok(await run({ WriteFile: { path: p("old") } }, { stdin: "new" }));
    const st = await stat(p("old"));
    assert.deepEqual([st.mode & 0o7777, st.uid, st.gid], [0o640, 65534, 65534]);
    assert.equal(await readFile(p("old"), "utf8"), "new");
    ok(await run({ WriteFile: { path: p("u027") } }, { stdin: "x", umask: "027" }));
    ok(await run({ WriteFile: { path: p("u0") } }, { stdin: "x", umask: "0" }));
    assert.equal((await stat(p("u027"))).mode & 0o7777, 0o640);
    assert.equal((await stat(p("u0"))).mode & 0o7777, 0o666);
    await symlink("old", p("link"));
    await symlink("made/by/write", p("dangling"));
    ok(await run({ WriteFile: { path: p("link") } }, { stdin: "via link" }));
    ok(await run({ WriteFile: { path: p("dangling") } }, { stdin: "created" }));
    assert.equal(await readlink(p("link")), "old");
    assert.equal(await readFile(p("old"), "utf8"), "via link");
    assert.equal(await readFile(p("made/by/write"), "utf8"), "created");
  });

  it("WriteFile over an existing file: replaced whole and atomically; the old content goes with its last name, no file left behind", async () => {
    const dir = await tempDir();
    const p = (n: string) => join(dir, n);
    const old = randomBytes(8 << 20);
    await writeFile(p("t"), old);
    await writeFile(p("kept"), "another file");
    // Open and hard-linked, the old file keeps its bytes: it is replaced, not rewritten.
    const held = await open(p("t"), "r");
    try {
      const next = randomBytes(3 << 20);
      ok(await run({ WriteFile: { path: p("t") } }, { stdin: next }));
      assert.equal(sha(await readFile(p("t"))), sha(next));
      assert.equal(sha(await held.readFile()), sha(old));
      assert.deepEqual((await readdir(dir)).sort(), ["kept", "t"]);
      await link(p("t"), p("hard"));
      ok(await run({ WriteFile: { path: p("t") } }, { stdin: "third" }));
      assert.equal(await readFile(p("t"), "utf8"), "third");
      assert.equal(sha(await readFile(p("hard"))), sha(next));
      assert.deepEqual((await readdir(dir)).sort(), ["hard", "kept", "t"]);
    } finally {
      await held.close();
    }
    // A reader opening the path throughout sees one content or the other, whole, never no file.
    await assertAtomicReplacements(p("swap"), 40, async (i) => {
      ok(await run({ WriteFile: { path: p("swap") } }, { stdin: contentOf(i) }));
    });
    assert.deepEqual((await readdir(dir)).sort(), ["hard", "kept", "swap", "t"]);
  });

  it("WriteFile over a file of 8 MiB or more: replaced, and the old file let go by no process once the helper's output closed", async (t) => {
    const dir = await tempDir();
    const p = (n: string) => join(dir, n);
    const big = 8 << 20;
    // Held open across the rename and closed by a child of the helper's (release_later).
    await writeFile(p("t"), randomBytes(big));
    const next = randomBytes(3 << 20);
    ok(await run({ WriteFile: { path: p("t") } }, { stdin: next }));
    assert.equal(sha(await readFile(p("t"))), sha(next));
    await noHolderOfReplaced(p("t"));
    // Not opened: another name keeps it (nothing to free), a file under the size.
    await writeFile(p("linked"), randomBytes(big));
    await link(p("linked"), p("other"));
    const before = sha(await readFile(p("other")));
    ok(await run({ WriteFile: { path: p("linked") } }, { stdin: "new" }));
    assert.equal(await readFile(p("linked"), "utf8"), "new");
    assert.equal(sha(await readFile(p("other"))), before);
    assert.deepEqual((await readdir(dir)).sort(), ["linked", "other", "t"]);
    if (process.getuid?.() !== 0)
      return t.skip("the unreadable old file needs root (to run the helper as nobody)");
    // An old file the helper may not read (mode 0200, nobody's): replaced all the same.
    const w = await tempDir();
    await chown(w, NOBODY.uid, NOBODY.gid);
    await writeFile(join(w, "wo"), randomBytes(big), { mode: 0o200 });
    await chown(join(w, "wo"), NOBODY.uid, NOBODY.gid);
    await chmod(join(w, "wo"), 0o200);
    ok(await run({ WriteFile: { path: join(w, "wo") } }, { ...NOBODY, stdin: "replaced" }));
    assert.equal(await readFile(join(w, "wo"), "utf8"), "replaced");
    assert.equal((await stat(join(w, "wo"))).mode & 0o777, 0o200);
    await noHolderOfReplaced(join(w, "wo"));
  });

  it("WriteFile over a file of 8 MiB or more holds it across the rename; a child of the helper's closes it last (strace)", async (t) => {
    if (!existsSync(STRACE)) return t.skip(`${STRACE} is missing (Debian's strace)`);
    const dir = await tempDir();
    const target = join(dir, "t");
    await writeFile(target, "");
    await truncate(target, 8 << 20);
    const log = join(dir, "strace.log");
    const r = spawnSync(
      STRACE,
      [
        "-f",
        "-qq",
        "-e",
        "trace=openat,rename,close,close_range",
        "-o",
        log,
        FS_TOOLS,
        JSON.stringify({ WriteFile: { path: target } }),
      ],
      { input: "new" },
    );
    assert.equal(r.status, 0, r.stderr.toString());
    assert.equal(await readFile(target, "utf8"), "new");
    // "PID syscall(args) = result" lines in order; a call another process interrupted is split
    // into "PID close(N <unfinished ...>" and "PID <... close resumed>) = 0".
    const lines = (await readFile(log, "utf8")).split("\n").filter(Boolean);
    const pidOf = (l: string) => Number(l.split(" ")[0]);
    const helper = pidOf(lines[0] ?? "");
    /** The first line from `from` on matching `re` from a process `pid` accepts; -1: none. */
    const at = (re: RegExp, pid: (p: number) => boolean, from = 0) =>
      lines.findIndex((l, i) => i >= from && re.test(l) && pid(pidOf(l)));
    const quoted = JSON.stringify(target).replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    const opened = at(
      new RegExp(`openat\\(AT_FDCWD, ${quoted}, O_RDONLY\\|.*O_NONBLOCK.* = (\\d+)$`),
      (p) => p === helper,
    );
    assert.ok(opened >= 0, `the helper did not open the old file:\n${lines.join("\n")}`);
    const fd = /= (\d+)$/.exec(lines[opened] ?? "")?.[1];
    const renamed = at(new RegExp(`rename\\(.*, ${quoted}\\) = 0`), (p) => p === helper);
    assert.ok(renamed > opened, "opened before the rename");
    const closing = new RegExp(`^\\d+\\s+close\\(${fd}[)< ]`);
    const ownClose = at(closing, (p) => p === helper, renamed);
    const childClose = at(closing, (p) => p !== helper, renamed);
    assert.ok(ownClose > renamed, `the helper closed its copy:\n${lines.join("\n")}`);
    assert.ok(childClose > ownClose, `a child closed the old file last:\n${lines.join("\n")}`);
  });

  it("WriteFile allocates the file's blocks ahead of its bytes: exact sizes around its 8 MiB steps, no delayed allocation left", async (t) => {
    const dir = await tempDir();
    const MiB8 = 8 << 20;
    for (const size of [0, 1, MiB8 - 1, MiB8, MiB8 + 1, 2 * MiB8 + 5]) {
      const data = randomBytes(size);
      ok(await run({ WriteFile: { path: join(dir, `f${size}`) } }, { stdin: data }));
      assert.equal(sha(await readFile(join(dir, `f${size}`))), sha(data), `${size} bytes`);
      ok(
        await run(
          { WriteFile: { path: join(dir, `f${size}`) } },
          { stdin: data.subarray(0, size >> 1) },
        ),
      );
      assert.equal(sha(await readFile(join(dir, `f${size}`))), sha(data.subarray(0, size >> 1)));
    }
    const why = await delallocUnobservable(dir);
    if (why) return t.skip(why);
    // To a new name (a rename over a file would have made ext4 allocate them anyway).
    ok(await run({ WriteFile: { path: join(dir, "big") } }, { stdin: randomBytes(MiB8 + 1) }));
    assert.equal(
      await delayedAllocation(join(dir, "big")),
      false,
      "blocks left to delayed allocation",
    );
  });

  it("WriteFile: IsDirectory, NotDirectory, PermissionDenied without reading stdin", {
    skip: AS_ROOT,
  }, async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "file"), "");
    await symlink(".", join(dir, "dirlink"));
    await chmod(dir, 0o755);
    // stdin stays open: the helper must answer without waiting for it.
    for (const n of ["", "dirlink", "new/"])
      fails(await run({ WriteFile: { path: join(dir, n) } }), "IsDirectory");
    fails(await run({ WriteFile: { path: join(dir, "file/x") } }), "NotDirectory", dir);
    fails(await run({ WriteFile: { path: join(dir, "file/x/y") } }), "NotDirectory", dir);
    fails(await run({ WriteFile: { path: join(dir, "file") } }, NOBODY), "PermissionDenied", dir);
    fails(await run({ WriteFile: { path: join(dir, "new") } }, NOBODY), "PermissionDenied", dir);
    assert.deepEqual((await readdir(dir)).sort(), ["dirlink", "file"]);
  });

  it("WriteFile: a writable file in a directory the user cannot write is written in place", {
    skip: AS_ROOT,
  }, async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "open"), "before");
    await chmod(join(dir, "open"), 0o666);
    await chmod(dir, 0o755);
    const ino = (await stat(join(dir, "open"))).ino;
    ok(await run({ WriteFile: { path: join(dir, "open") } }, { ...NOBODY, stdin: "after" }));
    assert.equal(await readFile(join(dir, "open"), "utf8"), "after");
    assert.equal((await stat(join(dir, "open"))).ino, ino);
  });

  it("WriteFile into a FIFO opens it at EOF and writes into it", async () => {
    const dir = await tempDir();
    const fifo = join(dir, "fifo");
    execFileSync("mkfifo", [fifo]);
    const reader = spawn("cat", [fifo], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      const got: Buffer[] = [];
      reader.stdout.on("data", (b: Buffer) => got.push(b));
      const closed = new Promise((resolve) => reader.on("close", resolve));
      ok(await run({ WriteFile: { path: fifo } }, { stdin: "through the fifo" }));
      await closed;
      assert.equal(Buffer.concat(got).toString(), "through the fifo");
      assert.ok((await lstat(fifo)).isFIFO());
    } finally {
      if (reader.exitCode === null && reader.pid !== undefined) process.kill(reader.pid, "SIGKILL");
    }
  });

  it("WriteFile killed before EOF (SIGTERM, SIGINT, SIGHUP): target untouched, no temporary file", async () => {
    const dir = await tempDir();
    const target = join(dir, "target");
    await writeFile(target, "original");
    for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
      const s = start({ WriteFile: { path: target } });
      s.child.stdin?.write(randomBytes(1 << 20));
      // Wait until it holds its staging file (an fd in the target's directory), then kill it.
      const pid = s.child.pid as number;
      const deadline = Date.now() + 10_000;
      for (;;) {
        const fds = await readdir(`/proc/${pid}/fd`).catch(() => []);
        const links = await Promise.all(
          fds.map((fd) => readlink(`/proc/${pid}/fd/${fd}`).catch(() => "")),
        );
        if (links.some((l) => l.startsWith(`${dir}/`))) break;
        assert.ok(Date.now() < deadline, "the helper never opened its staging file");
        await sleep(20);
      }
      process.kill(pid, signal);
      const r = await s.done;
      assert.equal(r.signal, null, signal);
      assert.notEqual(r.code, 0, signal);
      assert.equal(await readFile(target, "utf8"), "original", signal);
      assert.deepEqual(await readdir(dir), ["target"], signal);
    }
  });
});
