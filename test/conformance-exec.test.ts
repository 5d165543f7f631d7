import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";
import { OCI_RUNTIMES, runcSkipReason, startRuncRouter } from "./helpers/runc.ts";

/**
 * The core exec behaviours, the same on every runtime. Paths are inside the
 * task (/tmp exists in both), pids are the task's own (read in the task).
 * The runc runtime runs it with each OCI runtime CLI: runc, crun and runsc.
 */
const variants: { label: string; oci: string | undefined }[] = [
  { label: "host runtime", oci: undefined },
  ...OCI_RUNTIMES.map((o) => ({
    label: o.label === "runc" ? "runc runtime" : `runc runtime, --oci-runtime ${o.label}`,
    oci: o.binary,
  })),
];
for (const { label, oci } of variants) {
  const skip = oci ? await runcSkipReason(oci) : undefined;
  describe(`exec conformance (${label})`, { skip }, () => {
    let r: TestRouter;
    let task: string;
    before(async () => {
      r = oci ? await startRuncRouter({ ociRuntime: oci }) : await startRouter();
      task = await r.newTask();
    });
    after(() => r?.close());

    const run = async (argv: string[], opts: Parameters<TestRouter["client"]["start"]>[2] = {}) => {
      const id = await r.client.start(task, argv, { stdout: "pipe", stderr: "pipe", ...opts });
      const status = await r.client.wait(task, id);
      const stdout = await collect(r.client.read(task, id, "stdout"));
      const stderr = await collect(r.client.read(task, id, "stderr"));
      return { id, status, stdout: stdout.toString(), stderr: stderr.toString(), raw: stdout };
    };

    it("reports exit codes and signals exactly (exit 137 is not kill -9)", async () => {
      assert.deepEqual((await run(["sh", "-c", "exit 3"])).status, { code: 3 });
      assert.deepEqual((await run(["sh", "-c", "exit 137"])).status, { code: 137 });
      assert.deepEqual((await run(["sh", "-c", "kill -9 $$"])).status, { signal: 9 });
      assert.deepEqual((await run(["sh", "-c", "kill -TERM $$"])).status, { signal: 15 });
      assert.deepEqual((await run(["sh", "-c", "exit 143"])).status, { code: 143 });
    });

    it("separates stdout and stderr, and merges them in write order", async () => {
      const sep = await run(["sh", "-c", "echo out; echo err >&2"]);
      assert.deepEqual([sep.stdout, sep.stderr], ["out\n", "err\n"]);
      const merged = await run(["sh", "-c", "echo a; echo b >&2; echo c; echo d >&2"], {
        stderr: "stdout",
      });
      assert.deepEqual([merged.stdout, merged.stderr], ["a\nb\nc\nd\n", ""]);
    });

    it("delivers output bytes exactly (binary, large)", async () => {
      const bin = await run(["printf", "\\000\\377\\r\\n\\001"]);
      assert.deepEqual([...bin.raw], [0, 255, 13, 10, 1]);
      const big = await run(["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x"]);
      assert.equal(big.raw.length, 3_000_000);
      assert.ok(big.raw.every((b) => b === 0x78));
    });

    it("passes stdin through, EOF included", async () => {
      const id = await r.client.start(task, ["sh", "-c", "cat; echo done"], { stdout: "pipe" });
      await r.client.writeStdin(task, id, 0, Buffer.from("hello\n"));
      await r.client.writeStdin(task, id, 6, Buffer.from("world\n"), true);
      assert.deepEqual(await r.client.wait(task, id), { code: 0 });
      assert.equal(
        (await collect(r.client.read(task, id, "stdout"))).toString(),
        "hello\nworld\ndone\n",
      );
    });

    it("a timeout kills the command's whole tree", async () => {
      const res = await run(
        ["sh", "-c", "sleep 300 & echo $!; sh -c 'sleep 300 & echo $!; wait' & wait"],
        // 3 s: both shells must print their pids before the kill, on a loaded machine too.
        { timeoutSecs: 3 },
      );
      assert.deepEqual(res.status, { signal: 9 });
      const pids = res.stdout.trim().split("\n");
      assert.equal(pids.length, 2, res.stdout);
      // Checked inside the task: gone or a zombie, within 10 s.
      const check = await run([
        "sh",
        "-c",
        'for i in $(seq 100); do alive=""; for p in "$@"; do s=$(cut -d" " -f3 /proc/$p/stat 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ] && alive="$alive $p"; done; [ -z "$alive" ] && exit 0; sleep 0.1; done; echo "alive:$alive"; exit 1',
        "sh",
        ...pids,
      ]);
      assert.deepEqual(check.status, { code: 0 }, check.stdout);
    });

    it("runs in the workdir; a missing workdir is FAILED_PRECONDITION", async () => {
      const res = await run(["pwd"], { workdir: "/tmp" });
      assert.equal(res.stdout, "/tmp\n");
      await assert.rejects(r.client.start(task, ["pwd"], { workdir: "/no/such/dir" }), {
        kind: "FailedPrecondition",
      });
      const home = await run(["sh", "-c", 'cd "$HOME" && pwd']);
      assert.equal(home.status.code, 0, home.stderr);
    });

    it("a directory the task made under /tmp is a workdir (gVisor's own /tmp would hide it)", async () => {
      const made = await run(["mktemp", "-d", "/tmp/workdir.XXXXXX"]);
      const dir = made.stdout.trim();
      assert.equal(made.status.code, 0, made.stderr);
      try {
        const res = await run(["pwd"], { workdir: dir });
        assert.equal(res.stdout, `${dir}\n`, res.stderr);
      } finally {
        await run(["rm", "-rf", dir]);
      }
    });

    it("a missing program is 127, a non-executable one 126, with a shell's reason", async () => {
      const nf = await run(["no-such-program-x"]);
      assert.deepEqual(nf.status, { code: 127 });
      assert.match(nf.stderr, /no-such-program-x: command not found/);
      const dir = await run(["/tmp"]);
      assert.deepEqual(dir.status, { code: 126 });
      assert.match(dir.stderr, /\/tmp: Permission denied/);
    });

    it("with stderr merged, the reason for a missing program is on stdout", async () => {
      const nf = await run(["no-such-program-y"], { stderr: "stdout" });
      assert.deepEqual(nf.status, { code: 127 });
      assert.equal(nf.stdout, "taskrouter: no-such-program-y: command not found\n");
    });

    it("starts the command with no signal ignored (kill -32, -33, -15 end a child)", async () => {
      // glibc's posix_spawn leaves its internal signals 32 and 33 ignored in the child.
      const script = "for s in 32 33 15; do sleep 10 & kill -$s $!; wait $!; echo $?; done";
      const res = await run(["sh", "-c", script]);
      assert.equal(res.stdout, "160\n161\n143\n", res.stderr);
    });
  });
}
