/**
 * Sidecar containers (issue 12 part 4, PROTOCOL-LATER §3.4/§5.10) through the
 * independent grpc-js + proto-loader stack, on runc and crun: a sidecar from
 * a stored image runs a TCP server that the main container reaches over the
 * shared network namespace; Get/List/Wait/Terminate; names, replays and
 * refusals; execs with `container_id`; results as GenericResult; the CLI
 * columns. Filesystems, removal and restarts: sidecar-fs.test.ts.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { runCli } from "./helpers/cli-run.ts";
import { CRUN, runcSkipReason } from "./helpers/runc.ts";
import { SERVER_REPLY, type SidecarSuite, startSidecarSuite } from "./helpers/sidecar-image.ts";
import { expectStatus, grpc } from "./helpers/wire-client.ts";

const RUNTIMES = [
  { label: "runc", binary: "runc" },
  { label: "crun", binary: CRUN },
];
const TERMINATED = 3;

const SUCCESS = 1;
const FAILURE = 2;

for (const { label, binary } of RUNTIMES) {
  const skip = await runcSkipReason(binary);
  describe(`sidecar containers (${label})`, { skip }, () => {
    let f: SidecarSuite;
    before(async () => {
      f = await startSidecarSuite(binary);
    });
    after(async () => {
      await f?.close();
    });

    it("a sidecar's TCP server is reached from the main container over the shared netns", async () => {
      const { r, w, task, create, execIn, waitResult } = f;
      const res = await create({ container_name: "web", args: ["/srv/server", "7301"] });
      const id = res.container_id as string;
      assert.match(id, /^ctr-[0-9A-HJKMNP-TV-Z]{26}$/);
      assert.equal(res.container_name, "web");
      // The main container (the host image, with bash) connects to 127.0.0.1:7301.
      const connect =
        "for i in $(seq 1 600); do if exec 3<>/dev/tcp/127.0.0.1/7301; then cat <&3; exit 0; fi 2>/dev/null; sleep 0.05; done; exit 9";
      const got = await execIn(["bash", "-c", connect]);
      assert.deepEqual(got.exit, { code: 0 }, got.out);
      assert.equal(got.out, SERVER_REPLY);

      const one = await w.unary("TaskContainerGet", { task_id: task, container_name: "web" });
      assert.deepEqual(
        { ...(one.container as Record<string, unknown>) },
        { container_id: id, container_name: "web", status: "running", result: null },
      );
      const list = await w.unary("TaskContainerList", { task_id: task });
      const rows = list.containers as Record<string, unknown>[];
      assert.deepEqual(
        rows.map((c) => [c.container_name, c.container_id, c.status]),
        [
          ["main", "", "running"],
          ["web", id, "running"],
        ],
      );
      // Replay of the identical request: the same container, nothing new started.
      const again = await create({ container_name: "web", args: ["/srv/server", "7301"] });
      assert.equal(again.container_id, id);
      await expectStatus(
        create({ container_name: "web", args: ["/srv/server", "7302"] }),
        grpc.status.ALREADY_EXISTS,
        /already exists/,
      );
      // Wait with timeout 0 answers at once with no result while it runs.
      assert.equal((await waitResult(id, 0)).result, null);

      // An exec with container_id runs in the sidecar: its files, not main's.
      const inSide = await execIn(["cat", "/etc/marker"], id);
      assert.deepEqual(inSide, { exit: { code: 0 }, out: "sidecar image\n" });
      const inMain = await execIn(["sh", "-c", "test -e /srv/server || echo absent"]);
      assert.deepEqual(inMain, { exit: { code: 0 }, out: "absent\n" });

      // task ls / exec ls show the containers.
      const server = ["--server", r.address];
      const ls = await runCli([...server, "task", "ls"]);
      const row =
        ls.stdout
          .toString()
          .split("\n")
          .find((l) => l.startsWith(`${task} `)) ?? "";
      assert.match(ls.stdout.toString(), /^TASK ID\s+STATE\s+RUNTIME\s+EXECS\s+CONTAINERS\s/);
      assert.match(row, /^\S+\s+running\s+runc\s+\d+\s+2\s/);
      const els = (await runCli([...server, "exec", "ls", task])).stdout.toString();
      assert.match(els, /\sCONTAINER\s/);
      assert.ok(
        els.split("\n").some((l) => l.includes(` ${id} `) && l.endsWith("cat /etc/marker")),
        els,
      );

      // Terminate (twice: a replay is OK), then the result is TERMINATED.
      await w.unary("TaskContainerTerminate", { task_id: task, container_id: id });
      await w.unary("TaskContainerTerminate", { task_id: task, container_id: id });
      const done = (await waitResult(id, 0)).result as Record<string, unknown>;
      assert.equal(done.status, TERMINATED);
      assert.equal(done.exitcode, 137);
      await expectStatus(
        w.unary("TaskContainerGet", { task_id: task, container_name: "web" }),
        grpc.status.NOT_FOUND,
      );
      const old = await w.unary("TaskContainerGet", {
        task_id: task,
        container_name: "web",
        include_terminated: true,
      });
      assert.equal((old.container as Record<string, unknown>).status, "terminated");
      const listed = (await w.unary("TaskContainerList", { task_id: task }))
        .containers as unknown[];
      assert.equal(listed.length, 1);
      const all = await w.unary("TaskContainerList", { task_id: task, include_terminated: true });
      assert.equal((all.containers as unknown[]).length, 2);
      // The name is free again; execs in the ended one are refused.
      await expectStatus(execIn(["true"], id), grpc.status.FAILED_PRECONDITION, /not running/);
    });

    it("when the task's entrypoint exits, its running sidecars are terminated", async () => {
      const { r, w, image } = f;
      const id = (await r.tasks.create("", { entrypoint: ["sh", "-c", "read x; exit 4"] })).taskId;
      try {
        const side = await w.unary("TaskContainerCreate", {
          task_id: id,
          image_id: image,
          container_name: "bg",
          args: ["/srv/server", "7311"],
        });
        const container_id = side.container_id as string;
        const running = await w.unary("TaskContainerWait", {
          task_id: id,
          container_id,
          timeout: 0,
        });
        assert.equal(running.result, null, "runs while the entrypoint does");
        await w.unary("SandboxStdinWriteV2", {
          task_id: id,
          offset: 0,
          data: Buffer.from("go\n"),
          eof: true,
        });
        let result: Record<string, unknown> | null = null;
        for (let i = 0; i < 30 && !result; i++) {
          const res = await w.unary("TaskContainerWait", {
            task_id: id,
            container_id,
            timeout: 10,
          });
          result = res.result as Record<string, unknown> | null;
        }
        assert.equal(result?.status, TERMINATED);
        assert.equal((await r.tasks.get(id)).entrypointExitCode, 4);
      } finally {
        await r.tasks.terminate(id);
      }
    });

    it("results: exit 0 is SUCCESS, exit 3 FAILURE with exitcode 3 (a real wait)", async () => {
      const { w, task, create, waitResult } = f;
      const ok = await create({ container_name: "ok", args: ["sh", "-c", "sleep 0.2; exit 0"] });
      const bad = await create({ container_name: "bad", args: ["sh", "-c", "sleep 0.2; exit 3"] });
      const okRes = (await waitResult(ok.container_id as string, 60)).result as Record<
        string,
        unknown
      >;
      assert.equal(okRes.status, SUCCESS);
      assert.equal(okRes.exitcode, 0);
      const badRes = (await waitResult(bad.container_id as string, 60)).result as Record<
        string,
        unknown
      >;
      assert.equal(badRes.status, FAILURE);
      assert.equal(badRes.exitcode, 3);
      assert.match(badRes.exception as string, /exited with code 3/);
      const missing = await create({ container_name: "nope", args: ["/no/such/program"] });
      const r127 = (await waitResult(missing.container_id as string, 60)).result as Record<
        string,
        unknown
      >;
      assert.equal(r127.exitcode, 127);
      // Terminating one that has ended is OK and keeps its result.
      await w.unary("TaskContainerTerminate", { task_id: task, container_id: bad.container_id });
      assert.equal(
        ((await waitResult(bad.container_id as string, 0)).result as { exitcode: number }).exitcode,
        3,
      );
    });

    it("env, secrets carriers and workdir reach the entrypoint", async () => {
      const { create, waitResult } = f;
      const c = await create({
        container_name: "envy",
        args: ["sh", "-c", 'test "$A$B" = 12 && test "$(pwd)" = /srv'],
        secret_sources: [{ env: { contents: { A: "1" } } }, { env: { contents: { B: "2" } } }],
        workdir: "/srv",
      });
      const res = (await waitResult(c.container_id as string, 60)).result as Record<
        string,
        unknown
      >;
      assert.equal(res.exitcode, 0, String(res.exception));
      await expectStatus(
        create({ container_name: "w", args: ["true"], workdir: "/no/such" }),
        grpc.status.FAILED_PRECONDITION,
        /workdir/,
      );
      await expectStatus(
        create({
          container_name: "m",
          args: ["true"],
          env: { A: "1" },
          secret_sources: [{ env: { contents: {} } }],
        }),
        grpc.status.INVALID_ARGUMENT,
      );
    });

    it("refusals: main, empty args, BLOCKED, ALLOWLIST outside an open task, unknown volumes, bad pty_info, bad names, unknown ids", async () => {
      const { w, task, create, execIn, waitResult } = f;
      const cases: [Record<string, unknown>, grpc.status, RegExp][] = [
        [{ container_name: "main", args: ["true"] }, grpc.status.ALREADY_EXISTS, /main/],
        [{ container_name: "x", args: [] }, grpc.status.INVALID_ARGUMENT, /args/],
        [{ container_name: "", args: ["true"] }, grpc.status.INVALID_ARGUMENT, /container_name/],
        [{ container_name: "a b", args: ["true"] }, grpc.status.INVALID_ARGUMENT, /container_name/],
        [
          { container_name: "x", args: ["true"], network_access: { network_access_type: 2 } },
          grpc.status.INVALID_ARGUMENT,
          /BLOCKED/,
        ],
        [
          {
            container_name: "x",
            args: ["true"],
            network_access: { network_access_type: 3, allowed_cidrs: ["10.0.0.0/8"] },
          },
          grpc.status.FAILED_PRECONDITION,
          /network "none": a sidecar's own ALLOWLIST/, // works in "open" tasks: sidecar-network.test.ts
        ],
        [
          {
            container_name: "x",
            args: ["true"],
            volume_mounts: [{ volume_id: "vo-1", mount_path: "/v" }],
          },
          grpc.status.NOT_FOUND,
          /volume "vo-1" not found/,
        ],
        [
          { container_name: "x", args: ["true"], pty_info: { enabled: true, pty_type: 9 } },
          grpc.status.INVALID_ARGUMENT,
          /pty_type/,
        ],
        [
          { container_name: "x", args: ["true"], memory_reserve_consume_mib: 1 },
          grpc.status.INVALID_ARGUMENT,
          /memory/,
        ],
        [
          { container_name: "x", args: ["true"], image_id: "im-00000000000000000000000000000000" },
          grpc.status.NOT_FOUND,
          /image/,
        ],
      ];
      for (const [req, code, re] of cases) await expectStatus(create(req), code, re);
      const unknown = "ctr-00000000000000000000000000";
      await expectStatus(execIn(["true"], unknown), grpc.status.NOT_FOUND, /container/);
      await expectStatus(waitResult(unknown, 0), grpc.status.NOT_FOUND);
      await expectStatus(
        w.unary("TaskContainerTerminate", { task_id: task, container_id: unknown }),
        grpc.status.NOT_FOUND,
      );
      await expectStatus(
        w.unary("TaskMountDirectory", {
          task_id: task,
          path: Buffer.from("/mnt/x"),
          image_id: "",
          container_id: unknown,
        }),
        grpc.status.NOT_FOUND,
      );
      await expectStatus(
        w.unary("TaskSnapshotFilesystem", {
          task_id: task,
          snapshot_id: randomUUID(),
          ttl_seconds: 60,
          container_id: unknown,
        }),
        grpc.status.NOT_FOUND,
      );
      await expectStatus(
        w.unary("TaskContainerGet", { task_id: task, container_name: "never" }),
        grpc.status.NOT_FOUND,
      );
    });
  });
}
