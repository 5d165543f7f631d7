/**
 * Sidecars with `pty_info` (issue 12, PROTOCOL-LATER §3.4 field 11) through
 * the independent grpc-js + proto-loader stack, on runc and crun: the
 * entrypoint runs on a terminal of the requested size (isatty, `tty`, `stty
 * size`, TERM/COLORTERM/TERM_PROGRAM), what it writes is drained so a flood
 * ends and Wait returns its exit code or signal, Terminate works, the drain
 * outlives a router restart, a sidecar without pty_info still has no
 * terminal; refusals; fingerprints of requests without a terminal unchanged.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { tarDirectory } from "../src/cli/tar-dir.ts";
import { RouterClient } from "../src/client/client.ts";
import { ImagesAdminClient } from "../src/client/images.ts";
import type { ContainerRequest } from "../src/tasks/containers/container-request.ts";
import { containerFingerprint } from "../src/tasks/containers/container-request.ts";
import { copyProgram } from "./helpers/images.ts";
import {
  CRUN,
  removeDataDir,
  runcSkipReason,
  startRuncDaemon,
  tempDataDir,
} from "./helpers/runc.ts";
import { makeSidecarImage, type SidecarSuite, startSidecarSuite } from "./helpers/sidecar-image.ts";
import { expectStatus, grpc, STDERR, STDOUT, WireClient } from "./helpers/wire-client.ts";

const RUNTIMES = [
  { label: "runc", binary: "runc" },
  { label: "crun", binary: CRUN },
];
const SUCCESS = 1;
const FAILURE = 2;
const TERMINATED = 3;
/** Long enough for any machine; a Wait that runs out fails the test (no result), it is not a threshold. */
const WAIT_S = 300;

/** What the probing entrypoint records in /tmp/probe (then `: > /tmp/done`), one fact a line. */
const PROBE = [
  "P=/tmp/probe; tty >> $P; test -t 0 && echo in-tty >> $P;",
  "test -t 1 && echo out-tty >> $P; test -t 2 && echo err-tty >> $P; stty size >> $P;",
  'echo "TERM=$TERM" >> $P; echo "COLORTERM=[$COLORTERM]" >> $P;',
  'echo "TP=[$TERM_PROGRAM]" >> $P; : > /tmp/done;',
].join(" ");
/** An exec that waits (bounded by a count, not a time) for /tmp/done and prints /tmp/probe. */
const READ_PROBE =
  "for i in $(seq 1 6000); do test -e /tmp/done && exec cat /tmp/probe; sleep 0.05; done; exit 9";

/** The sidecar image plus tty, stty, yes, head and seq. */
async function makePtyImage(dir: string): Promise<void> {
  await makeSidecarImage(dir);
  for (const p of ["tty", "stty", "yes", "head", "seq"]) {
    await copyProgram(dir, `/usr/bin/${p}`, `/bin/${p}`);
  }
}

for (const { label, binary } of RUNTIMES) {
  const skip = await runcSkipReason(binary);
  describe(`sidecar pty_info (${label})`, { skip }, () => {
    let f: SidecarSuite;
    let image: string;
    before(async () => {
      f = await startSidecarSuite(binary);
      const tree = join(f.s.dir, "pty-tree");
      await makePtyImage(tree);
      image = await new ImagesAdminClient(f.r.client).import(tarDirectory(tree), {
        format: "tree",
        source: "test",
      });
    });
    after(async () => {
      await f?.close();
    });

    const probeIn = async (id: string) => {
      const got = await f.execIn(["sh", "-c", READ_PROBE], id);
      assert.deepEqual(got.exit, { code: 0 }, got.out);
      return got.out;
    };
    const result = async (id: string) =>
      (await f.waitResult(id, WAIT_S)).result as { status: number; exitcode: number } | null;

    it("the entrypoint runs on a terminal of the requested size, with TERM and friends", async () => {
      const pty_info = {
        enabled: true,
        winsz_rows: 33,
        winsz_cols: 101,
        env_term: "xterm-256color",
        env_colorterm: "truecolor",
        env_term_program: "tp-test",
        pty_type: 1,
      };
      const req = {
        image_id: image,
        container_name: "term",
        args: ["sh", "-c", `${PROBE} exec sleep 100000`],
        env: { TERM: "from-env", COLORTERM: "from-env" },
      };
      const c = await f.create({ ...req, pty_info });
      const id = c.container_id as string;
      const lines = (await probeIn(id)).split("\n");
      assert.match(lines[0] ?? "", /^\/dev\/pts\/\d+$/);
      assert.deepEqual(lines.slice(1), [
        "in-tty",
        "out-tty",
        "err-tty",
        "33 101",
        "TERM=xterm-256color",
        "COLORTERM=[truecolor]",
        "TP=[tp-test]",
        "",
      ]);
      // An identical replay is the same container; another size is another container.
      assert.equal((await f.create({ ...req, pty_info })).container_id, id);
      await expectStatus(
        f.create({ ...req, pty_info: { ...pty_info, winsz_rows: 34 } }),
        grpc.status.ALREADY_EXISTS,
      );
      // Terminate ends it (the terminal's holder with it): TERMINATED 137.
      await f.w.unary("TaskContainerTerminate", { task_id: f.task, container_id: id });
      const r = (await result(id)) as { status: number; exitcode: number; exception: string };
      assert.deepEqual(
        [r.status, r.exitcode, r.exception],
        [TERMINATED, 137, "terminated (TaskContainerTerminate)"],
      );
    });

    it("defaults: 24x80 and TERM=xterm when pty_info carries no size or TERM", async () => {
      const c = await f.create({
        image_id: image,
        container_name: "plain-pty",
        args: ["sh", "-c", `${PROBE} exec sleep 100000`],
        pty_info: { enabled: true, pty_type: 2 },
      });
      const lines = (await probeIn(c.container_id as string)).split("\n");
      assert.deepEqual(lines.slice(4, 8), ["24 80", "TERM=xterm", "COLORTERM=[]", "TP=[]"]);
      await f.w.unary("TaskContainerTerminate", { task_id: f.task, container_id: c.container_id });
    });

    it("without pty_info (or with enabled false) the entrypoint has no terminal", async () => {
      for (const [name, extra] of [
        ["no-pty", {}],
        ["off-pty", { pty_info: { enabled: false, winsz_rows: 10 } }],
      ] as const) {
        const c = await f.create({
          image_id: image,
          container_name: name,
          args: ["sh", "-c", `${PROBE} exec sleep 100000`],
          ...extra,
        });
        const out = await probeIn(c.container_id as string);
        assert.match(out, /^not a tty\n/);
        assert.doesNotMatch(out, /-tty/);
        await f.w.unary("TaskContainerTerminate", {
          task_id: f.task,
          container_id: c.container_id,
        });
      }
    });

    /** Creates a sidecar with a default terminal running `args`; its [status, exitcode] once ended. */
    const ended = async (name: string, args: string[]) => {
      const c = await f.create({
        image_id: image,
        container_name: name,
        args,
        pty_info: { enabled: true },
      });
      const r = await result(c.container_id as string);
      return [r?.status, r?.exitcode];
    };

    it("10 MB written to the terminal is drained: the entrypoint ends, Wait has its code", async () => {
      assert.deepEqual(await ended("flood", ["sh", "-c", "yes | head -c 10000000; exit 7"]), [
        FAILURE,
        7,
      ]);
      assert.deepEqual(await ended("ok", ["sh", "-c", "yes | head -c 1000000"]), [SUCCESS, 0]);
    });

    it("a signal that ends the entrypoint is its result (TERMINATED 128+n), as without a terminal", async () => {
      assert.deepEqual(await ended("sig", ["sh", "-c", "kill -TERM $$"]), [TERMINATED, 143]);
      assert.deepEqual(await ended("missing", ["/no/such/program"]), [FAILURE, 127]);
    });

    it("refusals: unknown pty_type, sizes past 65535, NUL in env_term; nothing started", async () => {
      const cases: [Record<string, unknown>, RegExp][] = [
        [{ enabled: true, pty_type: 9 }, /pty_type/],
        [{ enabled: true, winsz_rows: 65536 }, /winsz_rows/],
        [{ enabled: true, winsz_cols: 100000 }, /winsz_cols/],
        [{ enabled: true, env_term: "x\u0000y" }, /env_term/],
      ];
      for (const [pty_info, re] of cases) {
        await expectStatus(
          f.create({ image_id: image, container_name: "bad", args: ["true"], pty_info }),
          grpc.status.INVALID_ARGUMENT,
          re,
        );
      }
      await expectStatus(
        f.w.unary("TaskContainerGet", {
          task_id: f.task,
          container_name: "bad",
          include_terminated: true,
        }),
        grpc.status.NOT_FOUND,
      );
    });

    it("the terminal is drained across a router restart (nothing of it is on the host)", async () => {
      const dataDir = await tempDataDir();
      let d = await startRuncDaemon(dataDir, binary);
      try {
        const t = (await d.tasks.create("keep")).id;
        const client = new RouterClient(d.address);
        const img = await new ImagesAdminClient(client)
          .import(tarDirectory(join(f.s.dir, "pty-tree")), { format: "tree", source: "test" })
          .finally(() => client.close());
        let w = new WireClient(d.address);
        // Waits for /tmp/go (made after the restart), then floods the terminal.
        const wait = "while ! test -e /tmp/go; do sleep 0.05; done; yes | head -c 10000000; exit 5";
        const c = await w.unary("TaskContainerCreate", {
          task_id: t,
          container_name: "s",
          image_id: img,
          args: ["sh", "-c", wait],
          pty_info: { enabled: true },
        });
        w.close();
        await d.close();
        d = await startRuncDaemon(dataDir, binary);
        w = new WireClient(d.address);
        try {
          const go = await execExit(w, t, ["sh", "-c", ": > /tmp/go"], c.container_id as string);
          assert.deepEqual(go, { code: 0 });
          const res = await w.unary("TaskContainerWait", {
            task_id: t,
            container_id: c.container_id,
            timeout: WAIT_S,
          });
          const r = res.result as { status: number; exitcode: number };
          assert.deepEqual([r.status, r.exitcode], [FAILURE, 5]);
        } finally {
          w.close();
        }
        await d.tasks.terminate(t);
      } finally {
        await d.close();
        await removeDataDir(dataDir, binary);
      }
    });
  });
}

/** Runs argv in container `id` of task `task` through `w` (output discarded); its exit. */
async function execExit(w: WireClient, task: string, argv: string[], id: string) {
  const exec_id = randomUUID();
  const req = { task_id: task, exec_id, command_args: argv, container_id: id };
  await w.start({ ...req, stdout_config: STDOUT.DEVNULL, stderr_config: STDERR.DEVNULL } as never);
  return w.wait(task, exec_id);
}

describe("sidecar pty_info: create fingerprints", () => {
  const base: ContainerRequest = {
    name: "web",
    imageId: "im-1",
    argv: ["sh", "-c", "x"],
    envSources: [{ env: { B: "2", A: "1" } }, { secretId: "s" }],
    workdir: "/w",
    volumeMounts: [],
    network: undefined,
    pty: undefined,
    memoryMib: 64,
  };
  const pty = {
    rows: 24,
    cols: 80,
    term: "",
    colorterm: "",
    termProgram: "",
    noTerminateOnIdleStdin: false,
    type: "function" as const,
  };

  it("requests without a terminal keep the fingerprints recorded before pty_info was served", () => {
    // Computed by the code before this change (records of running sidecars carry them).
    assert.equal(containerFingerprint(base), "sitvq3+FX4gwI5F/1AEQIaoDKNvQtTcbaMGVg+MmXSM=");
    const vol = {
      ...base,
      volumeMounts: [
        { name: "v", path: "/data", readOnly: true, subPath: "", backgroundCommits: true },
      ],
    };
    assert.equal(containerFingerprint(vol), "5Sx8f9YBSijvCQxS1nQmHmn4+VtKCK0ZVH1hpLUUmt0=");
  });

  it("a terminal, its size and its TERM are part of it; pty_type and idle stdin are not", () => {
    const none = containerFingerprint(base);
    const one = containerFingerprint({ ...base, pty });
    assert.notEqual(one, none);
    assert.notEqual(containerFingerprint({ ...base, pty: { ...pty, rows: 25 } }), one);
    assert.notEqual(containerFingerprint({ ...base, pty: { ...pty, term: "vt100" } }), one);
    assert.equal(containerFingerprint({ ...base, pty: { ...pty, type: "shell" } }), one);
    assert.equal(
      containerFingerprint({ ...base, pty: { ...pty, noTerminateOnIdleStdin: true } }),
      one,
    );
  });
});
