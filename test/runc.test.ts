import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { RouterClient } from "../src/client/client.ts";
import { FileLog } from "../src/exec/file-log.ts";
import { nativeHelper } from "../src/runtime/native.ts";
import { RuncRuntime } from "../src/runtime/runc/runc-runtime.ts";
import { runTool } from "../src/util/run-tool.ts";
import { waitGone } from "./helpers/procs.ts";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";
import {
  initPid,
  OCI_RUNTIMES,
  removeDataDir,
  runcSkipReason,
  runIn,
  startRuncDaemon,
  startRuncRouter,
  tempDataDir,
} from "./helpers/runc.ts";

// Isolation, adoption after a restart and the init of runc tasks (limits: runc-limits.test.ts).
const sh = promisify(execFile);
const skip = await runcSkipReason();

// Shell only, no coreutils: gVisor 2022 (Debian's runsc) refuses the statx flags that
// coreutils' ls and stat pass (EINVAL), and has no /sys/class/net.
/** `LIST DIR...`: prints "DIR:", then the names in each DIR (dotfiles too), then an empty line. */
const LIST =
  'list() { for d in "$@"; do echo "$d:"; for f in "$d"/* "$d"/.[!.]* "$d"/..?*; do { [ -e "$f" ] || [ -L "$f" ]; } && basename "$f"; done; echo; done; }; list';
/** Prints the task's network interfaces, sorted, one a line. */
const IFACES = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort";

// Isolation and restart with every OCI runtime CLI (runc; crun when installed).
for (const { label, binary } of OCI_RUNTIMES) {
  const ociSkip = await runcSkipReason(binary);
  describe(`runc runtime: isolation (${label})`, { skip: ociSkip }, () => {
    let r: TestRouter;
    const markers: string[] = [];
    before(async () => {
      r = await startRuncRouter({ ociRuntime: binary });
    });
    after(async () => {
      for (const m of markers) await rm(m, { recursive: true, force: true });
      await r?.close();
    });

    it("a task sees neither the data dir, nor the host's /root and /home, nor other tasks", async () => {
      const tag = randomBytes(6).toString("hex");
      for (const dir of ["/root", "/home"]) {
        const m = join(dir, `.taskrouter-test-${tag}`);
        await writeFile(m, "host secret");
        markers.push(m);
      }
      const a = await r.newTask();
      const b = await r.newTask();
      const wrote = await runIn(r, a, [
        "sh",
        "-c",
        `echo a > /tmp/a-${tag}; echo a > /root/a-${tag}`,
      ]);
      assert.deepEqual(wrote.status, { code: 0 }, wrote.stderr);
      const look = await runIn(r, b, [
        "sh",
        "-c",
        `for p in "$@"; do [ -e "$p" ] && echo "visible: $p"; done; ${LIST} /root /home; exit 0`,
        "sh",
        r.dataDir,
        `/root/.taskrouter-test-${tag}`,
        `/home/.taskrouter-test-${tag}`,
        `/tmp/a-${tag}`,
        `/root/a-${tag}`,
        join(r.dataDir, "runc", "bundles", a),
      ]);
      assert.equal(look.stdout, "/root:\n\n/home:\n\n", look.stderr);
      // The same paths, as task A sees them: its own files only.
      const own = await runIn(r, a, ["cat", `/tmp/a-${tag}`, `/root/a-${tag}`]);
      assert.equal(own.stdout, "a\na\n");
    });

    it("writes in one task (also to /usr and /etc) are invisible in another and on the host", async () => {
      const tag = randomBytes(6).toString("hex");
      const a = await r.newTask();
      const b = await r.newTask();
      const w = await runIn(r, a, [
        "sh",
        "-c",
        `echo x > /usr/local/m-${tag} && echo y > /etc/m-${tag} && cat /usr/local/m-${tag} /etc/m-${tag}`,
      ]);
      assert.deepEqual([w.status, w.stdout], [{ code: 0 }, "x\ny\n"], w.stderr);
      const seen = await runIn(r, b, [
        "sh",
        "-c",
        `cat /usr/local/m-${tag} /etc/m-${tag} 2>&1; exit 0`,
      ]);
      assert.match(seen.stdout, /No such file/);
      assert.equal(existsSync(`/usr/local/m-${tag}`) || existsSync(`/etc/m-${tag}`), false);
    });

    it("network none: only a loopback interface, and it is up", async () => {
      const t = await r.newTask();
      const res = await runIn(r, t, ["sh", "-c", `${IFACES}; ip -o link show lo`]);
      const lines = res.stdout.trim().split("\n");
      assert.deepEqual(lines.slice(0, -1), ["lo"], res.stderr);
      assert.match(lines.at(-1) ?? "", /<[^>]*\bUP\b[^>]*>/, "lo is up");
    });

    it("network host: the machine's interfaces", async () => {
      const t = (await r.tasks.create("", { network: "host" })).taskId;
      const res = await runIn(r, t, ["sh", "-c", IFACES]);
      assert.deepEqual(res.stdout.trim().split("\n"), readdirSync("/sys/class/net").sort());
    });

    it("pid 1 reaps a double-forked orphan (no zombie stays)", async () => {
      const t = await r.newTask();
      const res = await runIn(r, t, ["sh", "-c", "sh -c 'sleep 0.3 & echo $!'"]);
      const orphan = res.stdout.trim();
      assert.match(orphan, /^\d+$/);
      const check = await runIn(r, t, [
        "sh",
        "-c",
        `for i in $(seq 100); do [ -e /proc/${orphan} ] || exit 0; sleep 0.1; done; cat /proc/${orphan}/stat; exit 1`,
      ]);
      assert.deepEqual(check.status, { code: 0 }, `not reaped: ${check.stdout}`);
    });

    // runc propagates such a mount into the task (rootfsPropagation rslave); crun binds
    // the rootfs privately, so there exposeMount places it in the task's mount namespace.
    it("a mount made under the task's rootfs after start shows inside, and goes again", async () => {
      const t = await r.newTask();
      const rt = r.daemon.tasks.get(t).runtime as RuncRuntime;
      const target = rt.resolvePath(t, "/mnt/late");
      await mkdir(target, { recursive: true });
      await writeFile(join(target, "f"), "hidden\n");
      let mounted = false;
      try {
        await sh("mount", ["-t", "tmpfs", "-o", "size=1m", "late", target]);
        mounted = true;
        await writeFile(join(target, "f"), "mounted\n");
        const st = await stat(target);
        await rt.taskFilesystem(t).exposeMount?.(target, { dev: st.dev, ino: st.ino });
        const res = await runIn(r, t, ["cat", "/mnt/late/f"]);
        assert.deepEqual([res.status, res.stdout], [{ code: 0 }, "mounted\n"], res.stderr);
        await sh("umount", ["-l", target]);
        mounted = false;
        await rt.taskFilesystem(t).hideMount?.(st.dev);
        const gone = await runIn(r, t, ["cat", "/mnt/late/f"]);
        assert.deepEqual([gone.status, gone.stdout], [{ code: 0 }, "hidden\n"], gone.stderr);
      } finally {
        if (mounted) await sh("umount", [target]).catch(() => undefined);
      }
    });

    it("the mount helper follows no symlink of the task's (a planted link fails, nothing moves)", {
      skip: label === "runsc" ? "runsc tasks get mounts by propagation, not the helper" : undefined,
    }, async () => {
      const t = await r.newTask();
      const rt = r.daemon.tasks.get(t).runtime as RuncRuntime;
      const planted = await runIn(r, t, ["sh", "-c", "mkdir -p /srv/in && ln -s /etc /srv/link"]);
      assert.deepEqual(planted.status, { code: 0 }, planted.stderr);
      const source = rt.resolvePath(t, "/srv/in");
      await sh("mount", ["-t", "tmpfs", "-o", "size=1m", "probe", source]);
      try {
        const fh = await open(source, "r");
        try {
          const pid = await initPid(r, t, binary);
          await assert.rejects(
            runTool(nativeHelper("taskrouter-mount"), ["attach", String(pid), "/srv/link"], {
              fd: fh.fd,
            }),
            /Too many levels of symbolic links/,
          );
          // detach through a planted parent link: never the task's read-only /proc/sys.
          const pl = await runIn(r, t, ["sh", "-c", "ln -s /proc /srv/p"]);
          assert.deepEqual(pl.status, { code: 0 }, pl.stderr);
          const procDev = (await readFile(`/proc/${pid}/mountinfo`, "utf8"))
            .split("\n")
            .map((l) => l.split(" "))
            .find((f) => f[4] === "/proc/sys")?.[2];
          assert.ok(procDev, "the task has /proc/sys mounted");
          await assert.rejects(
            runTool(nativeHelper("taskrouter-mount"), [
              "detach",
              String(pid),
              "/srv/p/sys",
              procDev,
            ]),
            /Too many levels of symbolic links/,
          );
          const still = await readFile(`/proc/${pid}/mountinfo`, "utf8");
          assert.match(still, / \/proc\/sys ro,/);
        } finally {
          await fh.close();
        }
        const etc = await runIn(r, t, ["test", "-e", "/etc/passwd"]);
        assert.deepEqual(etc.status, { code: 0 }, "the task's /etc is still its own");
      } finally {
        await sh("umount", ["-l", source]);
      }
    });

    it("runsc: a link the task plants in the status directory is never followed", {
      skip: label === "runsc" ? undefined : "only runsc execs report through a status directory",
    }, async () => {
      const t = await r.newTask();
      // The command swaps every status file (its own too) for a link to /dev/zero and a FIFO.
      const res = await runIn(r, t, [
        "sh",
        "-c",
        'cd /.taskrouter/status && for f in *.status; do rm -f "$f"; ln -s /dev/zero "$f"; done; mkfifo 999999-1.status; exit 5',
      ]);
      assert.deepEqual(res.status, { code: 5 }, res.stderr);
      const next = await runIn(r, t, ["sh", "-c", "kill -9 $$"]);
      assert.deepEqual(next.status, { signal: 9 });
    });

    it("resolvePath keeps a task's symlinks inside its rootfs", async () => {
      const t = await r.newTask();
      const rt = r.daemon.tasks.get(t).runtime as RuncRuntime;
      await runIn(r, t, ["sh", "-c", "ln -s / /root/up; ln -s ../../../../.. /root/dots"]);
      const root = rt.rootfs(t);
      assert.equal(rt.resolvePath(t, "/root/up/etc"), join(root, "etc"));
      assert.equal(rt.resolvePath(t, "/root/dots/etc"), join(root, "etc"));
      assert.equal(rt.resolvePath(t, "/../../etc"), join(root, "etc"));
      // A workdir through such a link is the task's directory, not the host's.
      const res = await runIn(r, t, ["true"]);
      assert.deepEqual(res.status, { code: 0 });
    });
  });

  describe(`runc runtime: router restart (${label})`, { skip: ociSkip }, () => {
    let dataDir: string;
    before(async () => {
      dataDir = await tempDataDir();
    });
    after(() => removeDataDir(dataDir, binary));

    it("a restarted router adopts the running task: same container, files kept", async () => {
      const d1 = await startRuncDaemon(dataDir, binary);
      let c = new RouterClient(d1.address);
      let pid: number;
      try {
        await d1.tasks.create("keep");
        pid = await initPid({ dataDir }, "keep", binary);
        const w = await runIn({ client: c }, "keep", ["sh", "-c", "echo kept > /root/file"]);
        assert.deepEqual(w.status, { code: 0 });
      } finally {
        c.close();
        await d1.close();
      }
      assert.equal(readFileSync(`/proc/${pid}/stat`, "utf8").length > 0, true, "init survives");
      const d2 = await startRuncDaemon(dataDir, binary);
      c = new RouterClient(d2.address);
      try {
        assert.equal(await initPid({ dataDir }, "keep", binary), pid);
        const task = d2.tasks.get("keep");
        assert.equal(task.runtimeStatus().state, "running");
        const res = await runIn({ client: c }, "keep", ["cat", "/root/file"]);
        assert.equal(res.stdout, "kept\n");
        await d2.tasks.terminate("keep");
        assert.deepEqual(await waitGone([pid]), []);
      } finally {
        c.close();
        await d2.close();
      }
    });
  });
}

describe("runc runtime without tini: the shell init reaps too", { skip }, () => {
  let dataDir: string;
  before(async () => {
    dataDir = await tempDataDir();
  });
  after(() => removeDataDir(dataDir));

  it("pid 1 is the shell loop, and it reaps a double-forked orphan", async () => {
    const rt = await RuncRuntime.create(dataDir, "runc", { shellInit: true });
    const env = await rt.prepareTask("s");
    const exec = async (script: string) => {
      const p = await rt.spawn("s", {
        argv: ["sh", "-c", script],
        env: env.baseEnv,
        cwd: "/",
        stdout: "pipe",
        stderr: "stdout",
      });
      p.stdin.end();
      // Output of an agent's exec is in its files (Proc.output), else on the pipe.
      const out = collect(
        p.output ? new FileLog(p.output.stdout).read(0) : (p.stdout as AsyncIterable<Buffer>),
      );
      const result = { status: await p.exited, out: (await out).toString() };
      await p.release?.();
      return result;
    };
    try {
      const init = await exec("tr '\\0' ' ' < /proc/1/cmdline");
      assert.match(init.out, /^\/bin\/sh -c trap/);
      const orphan = (await exec("sh -c 'sleep 0.3 & echo $!'")).out.trim();
      assert.match(orphan, /^\d+$/);
      const check = await exec(
        `for i in $(seq 100); do [ -e /proc/${orphan} ] || exit 0; sleep 0.1; done; exit 1`,
      );
      assert.deepEqual(check.status, { code: 0 }, "the orphan was not reaped");
    } finally {
      await rt.destroyTask("s");
      rt.close();
    }
  });
});

describe("host-runtime routers keep host tasks by default", () => {
  it("startRouter() gives host tasks", async () => {
    const r = await startRouter();
    try {
      const t = await r.tasks.create("");
      assert.equal(t.runtime, "host");
    } finally {
      await r.close();
    }
  });
});
