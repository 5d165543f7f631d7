/**
 * `taskrouter cp` as a real CLI process against a real router: files, trees,
 * symlinks and modes both ways with docker cp's destination rules, tar on
 * stdin/stdout, errors, a 256 MiB round trip, and the same on runc tasks.
 * Host tasks share this machine's filesystem, so their side is checked directly.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { createReadStream, createWriteStream, existsSync } from "node:fs";
import {
  chmod,
  link,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  truncate,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { extract, pack } from "tar-stream";
import { BIN, cliEnv, killAll, ROOT, runCli } from "./helpers/cli-run.ts";
import { noHolderOfReplaced } from "./helpers/holders.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { runcSkipReason, startRuncRouter } from "./helpers/runc.ts";
import { readTree } from "./helpers/tree.ts";

const MiB = 1024 * 1024;
const execFileP = promisify(execFile);
const HELPER = join(ROOT, "build/native/modal-sandbox-fs-tools");
const helperSkip = existsSync(HELPER) ? undefined : `${HELPER} is not built yet`;

/** Runs `taskrouter --server ADDR cp ARGS` with `input` on stdin; stdout as bytes. */
function cp(server: string, args: string[], input?: Buffer) {
  const child = spawn(process.execPath, [BIN, "--server", server, "cp", "-q", ...args], {
    cwd: ROOT,
    env: cliEnv(),
    stdio: "pipe",
  });
  const out: Buffer[] = [];
  let err = "";
  child.stdout.on("data", (c: Buffer) => out.push(c));
  child.stderr.on("data", (c: Buffer) => {
    err += c.toString();
  });
  child.stdin.on("error", () => {});
  child.stdin.end(input ?? Buffer.alloc(0));
  return new Promise<{ code: number | null; stdout: Buffer; stderr: string }>((resolve) =>
    child.once("close", (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err })),
  );
}

async function ok(p: ReturnType<typeof cp>) {
  const r = await p;
  assert.equal(r.code, 0, r.stderr);
  return r;
}

/** A tree with nested and empty directories, modes, binary content and symlinks. */
async function makeTree(dir: string): Promise<void> {
  await mkdir(join(dir, "sub/deeper"), { recursive: true });
  await mkdir(join(dir, "empty"));
  await writeFile(join(dir, "a.txt"), "hello\n");
  await writeFile(join(dir, "sub/bin.dat"), randomBytes(300_000));
  await writeFile(join(dir, "sub/deeper/run.sh"), "#!/bin/sh\necho hi\n", { mode: 0o755 });
  await writeFile(join(dir, "private"), "secret", { mode: 0o600 });
  await writeFile(join(dir, "empty.txt"), "");
  await symlink("a.txt", join(dir, "link-rel"));
  await symlink("/nonexistent/target", join(dir, "link-dangling"));
  await chmod(join(dir, "sub/deeper"), 0o750);
}

/** The tree without owner ids (copies are made by whoever runs the test). */
const shape = async (dir: string) =>
  Object.fromEntries(
    Object.entries(await readTree(dir)).map(([k, { uid: _u, gid: _g, ...e }]) => [k, e]),
  );

describe("cp (host tasks)", { skip: helperSkip }, () => {
  let r: TestRouter;
  let task: string;
  let local: string;
  let remote: string;
  before(async () => {
    r = await startRouter();
    task = await r.newTask();
    local = await mkdtemp(join(tmpdir(), "taskrouter-cp-local-"));
    remote = await mkdtemp(join(tmpdir(), "taskrouter-cp-remote-"));
  });
  after(async () => {
    await killAll();
    await r?.close();
    for (const d of [local, remote]) if (d) await rm(d, { recursive: true, force: true });
  });

  it("a file in and out: new name, into a directory, onto a file; mode kept", async () => {
    const src = join(local, "f.sh");
    await writeFile(src, "#!/bin/sh\n", { mode: 0o755 });
    await ok(cp(r.address, [src, `${task}:${remote}/g.sh`]));
    assert.equal((await stat(join(remote, "g.sh"))).mode & 0o777, 0o755);
    await ok(cp(r.address, [src, `${task}:${remote}`]));
    assert.equal(await readFile(join(remote, "f.sh"), "utf8"), "#!/bin/sh\n");
    await writeFile(src, "changed");
    await ok(cp(r.address, [src, `${task}:${remote}/g.sh`]));
    assert.equal(await readFile(join(remote, "g.sh"), "utf8"), "changed");
    await mkdir(join(local, "back"));
    await ok(cp(r.address, [`${task}:${remote}/g.sh`, join(local, "back")]));
    await ok(cp(r.address, [`${task}:${remote}/f.sh`, join(local, "back/h.sh")]));
    assert.equal(await readFile(join(local, "back/g.sh"), "utf8"), "changed");
    assert.equal((await stat(join(local, "back/h.sh"))).mode & 0o777, 0o755);
    // Out onto an existing local file: replaced, nothing else left in the directory.
    await ok(cp(r.address, [`${task}:${remote}/g.sh`, join(local, "back/h.sh")]));
    assert.equal(await readFile(join(local, "back/h.sh"), "utf8"), "changed");
    assert.deepEqual((await readdir(join(local, "back"))).sort(), ["g.sh", "h.sh"]);
  });

  it("a directory tree both ways: created, put inside an existing one, DIR/. merges contents", async () => {
    const src = join(local, "tree");
    await makeTree(src);
    const want = await shape(src);
    await ok(cp(r.address, [src, `${task}:${remote}/t1`]));
    assert.deepEqual(await shape(join(remote, "t1")), want);
    await ok(cp(r.address, [src, `${task}:${remote}/t1`]));
    assert.deepEqual(await shape(join(remote, "t1/tree")), want);
    await mkdir(join(remote, "t2"));
    await ok(cp(r.address, [`${src}/.`, `${task}:${remote}/t2`]));
    assert.deepEqual(await shape(join(remote, "t2")), want);

    await ok(cp(r.address, [`${task}:${remote}/t2`, join(local, "out1")]));
    assert.deepEqual(await shape(join(local, "out1")), want);
    await ok(cp(r.address, [`${task}:${remote}/t2`, join(local, "out1")]));
    assert.deepEqual(await shape(join(local, "out1/t2")), want);
    await mkdir(join(local, "out2"));
    await ok(cp(r.address, [`${task}:${remote}/t2/.`, join(local, "out2")]));
    assert.deepEqual(await shape(join(local, "out2")), want);
  });

  it("a symlink is copied as a link; -L copies what it points to", async () => {
    await writeFile(join(remote, "target.txt"), "pointed at");
    await symlink("target.txt", join(remote, "ln"));
    await ok(cp(r.address, [`${task}:${remote}/ln`, join(local, "ln-copy")]));
    assert.deepEqual((await readTree(join(local, "ln-copy")))["."]?.target, "target.txt");
    await ok(cp(r.address, ["-L", `${task}:${remote}/ln`, join(local, "ln-followed")]));
    assert.equal(await readFile(join(local, "ln-followed"), "utf8"), "pointed at");
  });

  it("a copy never writes through a link an earlier copy brought; setuid bits are not kept", async () => {
    // The task's tree holds a link to a local directory; the first copy brings the link.
    const victim = join(local, "victim");
    await mkdir(victim);
    const out = join(remote, "hostile");
    await mkdir(out);
    await symlink(victim, join(out, "d"));
    await writeFile(join(out, "s"), "x");
    await chmod(join(out, "s"), 0o6755);
    const dest = join(local, "hostile-copy");
    await ok(cp(r.address, [`${task}:${out}`, dest]));
    assert.equal((await stat(join(dest, "s"))).mode & 0o7777, 0o755);
    // Then the task makes `d` a directory with a file, and its contents are copied again.
    await rm(join(out, "d"));
    await mkdir(join(out, "d"));
    await writeFile(join(out, "d", "f"), "ATTACK");
    const again = await cp(r.address, [`${task}:${out}/.`, dest]);
    assert.equal(again.code, 1, again.stderr);
    assert.match(again.stderr, /is a symlink: refusing to copy a directory through it/);
    assert.deepEqual(await readdir(victim), []);
  });

  it("- reads a tar from stdin into a directory and writes one to stdout", async () => {
    const src = join(local, "tartree");
    await makeTree(src);
    const p = pack();
    const tarDone = (async () => {
      const parts: Buffer[] = [];
      for await (const c of p) parts.push(c as Buffer);
      return Buffer.concat(parts);
    })();
    p.entry({ name: "d/", type: "directory", mode: 0o755 });
    p.entry({ name: "d/x.txt", mode: 0o640 }, "x content");
    p.entry({ name: "d/l", type: "symlink", linkname: "x.txt" });
    p.entry({ name: "top.bin", mode: 0o644 }, Buffer.alloc(1000, 7));
    p.entry({ name: "nodir/link", type: "symlink", linkname: "../top.bin" });
    p.finalize();
    await mkdir(join(remote, "fromtar"));
    await ok(cp(r.address, ["-", `${task}:${remote}/fromtar`], await tarDone));
    assert.equal(await readFile(join(remote, "fromtar/d/x.txt"), "utf8"), "x content");
    assert.equal((await stat(join(remote, "fromtar/d/x.txt"))).mode & 0o777, 0o640);
    assert.equal((await readTree(join(remote, "fromtar")))["d/l"]?.target, "x.txt");
    assert.equal(await readFile(join(remote, "fromtar/nodir/link"), "utf8"), "\x07".repeat(1000));

    await ok(cp(r.address, [src, `${task}:${remote}/tarsrc`]));
    const out = await ok(cp(r.address, [`${task}:${remote}/tarsrc`, "-"]));
    const names: string[] = [];
    const files: Record<string, string> = {};
    const ex = extract();
    const reading = (async () => {
      for await (const e of ex) {
        names.push(e.header.name);
        const parts: Buffer[] = [];
        for await (const c of e) parts.push(c as Buffer);
        if (e.header.type === "file") files[e.header.name] = Buffer.concat(parts).toString();
      }
    })();
    ex.end(out.stdout);
    await reading;
    assert.ok(names.includes("tarsrc/"));
    assert.ok(names.includes("tarsrc/sub/deeper/run.sh"));
    assert.equal(files["tarsrc/a.txt"], "hello\n");
    // And the same tar extracts back into an identical tree.
    await mkdir(join(remote, "roundtrip"));
    await ok(cp(r.address, ["-", `${task}:${remote}/roundtrip`], out.stdout));
    assert.deepEqual(await shape(join(remote, "roundtrip/tarsrc")), await shape(src));
  });

  it("FIFOs are skipped with a note (reading one would block), the rest is copied", async () => {
    const d = join(remote, "withfifo");
    await mkdir(d);
    await writeFile(join(d, "f"), "data");
    await execFileP("mkfifo", [join(d, "pipe")]);
    const res = await ok(cp(r.address, [`${task}:${d}`, join(local, "nofifo")]));
    assert.match(res.stderr, /skipping .*pipe \(not a regular file\)/);
    assert.deepEqual(Object.keys(await readTree(join(local, "nofifo"))).sort(), [".", "f"]);
  });

  it("errors exit 1 with a clear message", async () => {
    const cases: [string[], RegExp][] = [
      [[join(local, "missing"), `${task}:${remote}/x`], /no such file or directory: .*missing/],
      [[`${task}:${remote}/missing`, join(local, "x")], /no such file or directory: .*:.*missing/],
      [["a", "b"], /one of SRC and DEST must be TASK:PATH/],
      [[`${task}:/a`, `${task}:/b`], /between two task paths/],
      [[join(local), "bad id!:/x"], /bad TASK:PATH/],
      [[join(local), `${task}:`], /the path is empty/],
      [[join(local, "back/g.sh"), `${task}:${remote}/nodir/sub/x`], /no such directory/],
      [[join(local, "tree"), `${task}:${remote}/g.sh`], /onto a file/],
      [[join(local, "back/g.sh"), "no-such-task:/tmp/x"], /NotFound/],
    ];
    for (const [args, msg] of cases) {
      const res = await cp(r.address, args);
      assert.equal(res.code, 1, `${args.join(" ")}: ${res.stderr}`);
      assert.match(res.stderr, /^taskrouter: cp: /);
      assert.match(res.stderr, msg);
    }
  });

  it("out onto a local file of 64 MiB or more: replaced, the old file let go by no process once cp exited", async () => {
    await writeFile(join(remote, "new.txt"), "the new content");
    const dst = join(local, "big.old");
    await writeFile(dst, "");
    await truncate(dst, 64 * MiB);
    await ok(cp(r.address, [`${task}:${remote}/new.txt`, dst]));
    assert.equal(await readFile(dst, "utf8"), "the new content");
    await noHolderOfReplaced(dst);
    // Another name keeps the old file: it is left as it was.
    await writeFile(dst, "");
    await truncate(dst, 64 * MiB);
    await link(dst, join(local, "big.link"));
    await ok(cp(r.address, [`${task}:${remote}/new.txt`, dst]));
    assert.equal(await readFile(dst, "utf8"), "the new content");
    assert.equal((await stat(join(local, "big.link"))).size, 64 * MiB);
    for (const f of ["big.old", "big.link"]) await rm(join(local, f));
    await rm(join(remote, "new.txt"));
  });

  it("a 256 MiB file round trip keeps every byte (sha256)", async () => {
    const big = join(local, "big.bin");
    const h = createHash("sha256");
    const w = createWriteStream(big);
    for (let i = 0; i < 256; i++) {
      const chunk = randomBytes(MiB);
      h.update(chunk);
      if (!w.write(chunk)) await once(w, "drain");
    }
    await new Promise<void>((res, rej) => w.end((err?: Error | null) => (err ? rej(err) : res())));
    const want = h.digest("hex");
    const sum = async (p: string) => {
      const hh = createHash("sha256");
      await pipeline(createReadStream(p), hh);
      return hh.digest("hex");
    };
    await ok(cp(r.address, [big, `${task}:${remote}/big.bin`]));
    assert.equal(await sum(join(remote, "big.bin")), want);
    await ok(cp(r.address, [`${task}:${remote}/big.bin`, join(local, "big.back")]));
    assert.equal(await sum(join(local, "big.back")), want);
    await rm(big);
    await rm(join(local, "big.back"));
    await rm(join(remote, "big.bin"));
  });
});

const runcSkip = helperSkip ?? (await runcSkipReason());

describe("cp (runc tasks)", { skip: runcSkip }, () => {
  let r: TestRouter;
  let task: string;
  let local: string;
  before(async () => {
    r = await startRuncRouter();
    task = await r.newTask();
    local = await mkdtemp(join(tmpdir(), "taskrouter-cp-runc-"));
  });
  after(async () => {
    await killAll();
    await r?.close();
    if (local) await rm(local, { recursive: true, force: true });
  });

  it("a tree goes into the container and comes back identical", async () => {
    const src = join(local, "tree");
    await makeTree(src);
    await ok(cp(r.address, [src, `${task}:/tmp/t`]));
    const ls = await runCli([
      "--server",
      r.address,
      "exec",
      task,
      "--",
      "ls",
      "-l",
      "/tmp/t/sub/deeper",
    ]);
    assert.match(ls.stdout, /-rwxr-xr-x .* run\.sh/);
    await ok(cp(r.address, [`${task}:/tmp/t`, join(local, "back")]));
    assert.deepEqual(await shape(join(local, "back")), await shape(src));
  });
});
