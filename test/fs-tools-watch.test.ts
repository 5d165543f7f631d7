import assert from "node:assert/strict";
import {
  appendFile,
  mkdir,
  readdir,
  readFile,
  readlink,
  realpath,
  rename,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { afterEach, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  fails,
  killLeftovers,
  ok,
  type Result,
  removeTemps,
  requireFsTools,
  run,
  type Started,
  start,
  tempDir,
} from "./helpers/fs-tools.ts";

interface Event {
  event_type: string;
  paths: string[];
}
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

/** Inotify watches the process holds (from /proc/PID/fdinfo). */
async function watchCount(pid: number): Promise<number> {
  let n = 0;
  for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [])) {
    if ((await readlink(`/proc/${pid}/fd/${fd}`).catch(() => "")) !== "anon_inode:inotify")
      continue;
    const info = await readFile(`/proc/${pid}/fdinfo/${fd}`, "utf8").catch(() => "");
    n += info.split("\n").filter((l) => l.startsWith("inotify wd:")).length;
  }
  return n;
}

/** A running Watch: its events as they come. */
class Watch {
  readonly events: Event[] = [];
  readonly s: Started;
  private partial = "";

  constructor(path: string, fields: Record<string, unknown> = {}) {
    this.s = start({
      Watch: { path, recursive: false, filter: null, timeout_secs: null, ...fields },
    });
    this.s.child.stdout?.on("data", (b: Buffer) => {
      const lines = (this.partial + b.toString()).split("\n");
      this.partial = lines.pop() ?? "";
      for (const line of lines) this.events.push(JSON.parse(line) as Event);
    });
  }

  /** Waits until the helper holds `n` inotify watches (it is ready). */
  async ready(n = 1): Promise<void> {
    const deadline = Date.now() + 10_000;
    while ((await watchCount(this.s.child.pid as number)) < n) {
      assert.ok(Date.now() < deadline, `never held ${n} watches`);
      await sleep(20);
    }
  }

  /** Waits (generously) for an event of `type` naming exactly `paths`. */
  async saw(type: string, ...paths: string[]): Promise<void> {
    const deadline = Date.now() + 10_000;
    const match = (e: Event) =>
      e.event_type === type && JSON.stringify(e.paths) === JSON.stringify(paths);
    while (!this.events.some(match)) {
      assert.ok(
        Date.now() < deadline,
        `no ${type} ${paths.join(" ")} in ${JSON.stringify(this.events)}`,
      );
      await sleep(20);
    }
  }

  /** Closes stdin (how the SDKs stop it); returns the result, every line checked. */
  async stop(): Promise<Result> {
    this.s.child.stdin?.end();
    return checked(await this.s.done);
  }
}

/** Exit 0, and stdout only JSON lines of known kinds with absolute paths. */
function checked(r: Result): Result {
  const out = ok(r).toString();
  for (const line of out.split("\n").slice(0, -1)) {
    const e = JSON.parse(line) as Event;
    assert.deepEqual(Object.keys(e), ["event_type", "paths"]);
    assert.ok(KINDS.includes(e.event_type), line);
    assert.ok(e.paths.length > 0 && e.paths.every((p) => p.startsWith("/")), line);
  }
  assert.ok(out === "" || out.endsWith("\n"));
  return r;
}

describe("modal-sandbox-fs-tools Watch (native/fs-tools-watch.c), run directly", () => {
  before(requireFsTools);
  afterEach(async () => {
    killLeftovers();
    await removeTemps();
  });

  it("a missing path is NotFound; timeout_secs 0 (or negative) exits 0 at once with no output", async () => {
    const dir = await realpath(await tempDir());
    const r = await run({
      Watch: { path: join(dir, "missing"), recursive: false, filter: null, timeout_secs: 5 },
    });
    fails(r, "NotFound", dir);
    assert.equal(r.stdout.length, 0);
    for (const timeout_secs of [0, -3, 0.7]) {
      const z = await run({ Watch: { path: dir, recursive: true, filter: null, timeout_secs } });
      assert.equal(checked(z).stdout.length, 0);
    }
  });

  it("Create, Modify and Remove of a directory's entries; a watched file gives Modify on write", async () => {
    const dir = await realpath(await tempDir());
    const f = join(dir, "f");
    await writeFile(join(dir, "existing"), "old");
    const w = new Watch(dir);
    await w.ready();
    await writeFile(f, "one");
    await w.saw("Create", f);
    await appendFile(f, "two");
    await w.saw("Modify", f);
    await writeFile(join(dir, "existing"), "replaced");
    await w.saw("Modify", join(dir, "existing"));
    await rm(f);
    await w.saw("Remove", f);
    await w.stop();

    const file = new Watch(join(dir, "existing"));
    await file.ready();
    await writeFile(join(dir, "existing"), "again");
    await file.saw("Modify", join(dir, "existing"));
    await rm(join(dir, "existing"));
    await file.saw("Remove", join(dir, "existing"));
    assert.equal(file.s.child.exitCode, null, "the watch goes on after its root is deleted");
    await file.stop();
  });

  it("recursive: existing and new subdirectories; not recursive: nothing deeper", async () => {
    const dir = await realpath(await tempDir());
    await mkdir(join(dir, "sub"));
    const w = new Watch(dir, { recursive: true });
    await w.ready(2);
    await writeFile(join(dir, "sub/x"), "");
    await w.saw("Create", join(dir, "sub/x"));
    await mkdir(join(dir, "new"));
    await w.saw("Create", join(dir, "new"));
    await w.ready(3);
    await writeFile(join(dir, "new/y"), "");
    await w.saw("Create", join(dir, "new/y"));
    // Made at once with its contents: what the new watch finds is reported too.
    await mkdir(join(dir, "quick/deep"), { recursive: true });
    await writeFile(join(dir, "quick/deep/z"), "");
    await w.saw("Create", join(dir, "quick/deep/z"));
    await w.stop();

    const flat = new Watch(dir, { recursive: false });
    await flat.ready();
    await writeFile(join(dir, "sub/deeper"), "");
    await writeFile(join(dir, "new/y"), "changed");
    await writeFile(join(dir, "marker"), "");
    await flat.saw("Create", join(dir, "marker"));
    await flat.stop();
    const deeper = flat.events.filter((e) =>
      e.paths.some((p) => p.startsWith(`${dir}/sub/`) || p.startsWith(`${dir}/new/`)),
    );
    assert.deepEqual(deeper, []);
  });

  it("renames: inside -> Rename [from, to]; moved in -> RenameTo; moved out -> RenameFrom", async () => {
    const base = await realpath(await tempDir());
    const dir = join(base, "w");
    const out = join(base, "out");
    await mkdir(dir);
    await mkdir(out);
    await writeFile(join(dir, "a"), "");
    await writeFile(join(out, "in"), "");
    await writeFile(join(dir, "leaving"), "");
    await mkdir(join(dir, "d"));
    const w = new Watch(dir, { recursive: true });
    await w.ready(2);
    await rename(join(dir, "a"), join(dir, "b"));
    await w.saw("Rename", join(dir, "a"), join(dir, "b"));
    await rename(join(out, "in"), join(dir, "in"));
    await w.saw("RenameTo", join(dir, "in"));
    await rename(join(dir, "leaving"), join(out, "leaving"));
    await w.saw("RenameFrom", join(dir, "leaving"));
    // A renamed subdirectory keeps its watch, under its new name.
    await rename(join(dir, "d"), join(dir, "e"));
    await w.saw("Rename", join(dir, "d"), join(dir, "e"));
    await writeFile(join(dir, "e/inside"), "");
    await w.saw("Create", join(dir, "e/inside"));
    await w.stop();
  });

  it("filters: ['Remove'] yields only removals, unknown names are ignored, [] yields nothing", async () => {
    const dir = await realpath(await tempDir());
    await writeFile(join(dir, "marker"), "");
    const w = new Watch(dir, { filter: ["Remove", "NoSuchKind"] });
    await w.ready();
    await writeFile(join(dir, "f1"), "x");
    await writeFile(join(dir, "f1"), "y");
    await rename(join(dir, "f1"), join(dir, "f2"));
    await rm(join(dir, "marker"));
    await w.saw("Remove", join(dir, "marker"));
    await w.stop();
    assert.deepEqual(
      w.events.map((e) => e.event_type),
      ["Remove"],
    );

    const none = new Watch(dir, { filter: [], timeout_secs: 2 });
    await none.ready();
    await writeFile(join(dir, "f3"), "");
    await rm(join(dir, "f2"));
    const r = checked(await none.s.done); // ends by its timeout, exit 0
    assert.equal(r.stdout.length, 0);
  });

  it("stops with exit 0 at stdin EOF, at its timeout, on SIGTERM and SIGINT, and on EPIPE", async () => {
    const dir = await realpath(await tempDir());
    const eof = new Watch(dir, { timeout_secs: 600 });
    await eof.ready();
    await eof.stop();
    checked(await new Watch(dir, { timeout_secs: 1 }).s.done);
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
      const w = new Watch(dir);
      await w.ready();
      process.kill(w.s.child.pid as number, signal);
      checked(await w.s.done);
    }
    const piped = new Watch(dir);
    await piped.ready();
    piped.s.child.stdout?.destroy();
    for (let i = 0; piped.s.child.exitCode === null && i < 500; i++) {
      await writeFile(join(dir, `f${i}`), "");
      await sleep(20);
    }
    assert.deepEqual([piped.s.child.exitCode, piped.s.child.signalCode], [0, null]);
    assert.equal((await piped.s.done).stderr, "");
  });

  it("a symlinked root: events name paths under the resolved directory", async () => {
    const base = await realpath(await tempDir());
    await mkdir(join(base, "real"));
    await symlink("real", join(base, "link"));
    const w = new Watch(join(base, "link"));
    await w.ready();
    await writeFile(join(base, "link/f"), "");
    await w.saw("Create", join(base, "real/f"));
    await w.stop();
    assert.ok(w.events.every((e) => e.paths.every((p) => p.startsWith(`${base}/real/`))));
  });

  it("a deleted root: Remove [root], and the watch goes on until EOF", async () => {
    const base = await realpath(await tempDir());
    const dir = join(base, "w");
    await mkdir(dir);
    await writeFile(join(dir, "f"), "");
    const w = new Watch(dir, { recursive: true });
    await w.ready();
    await rm(dir, { recursive: true });
    await w.saw("Remove", join(dir, "f"));
    await w.saw("Remove", dir);
    await sleep(200);
    assert.equal(w.s.child.exitCode, null);
    await w.stop();
  });
});
