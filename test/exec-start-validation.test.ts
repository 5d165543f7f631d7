/**
 * Refusals of malformed TaskExecStart / TaskContainerCreate /
 * TaskSnapshotFilesystem fields, through the independent grpc-js stack on the
 * host runtime: each is INVALID_ARGUMENT with a message naming the field the
 * client sent, and changes nothing (no exec, the exec_id stays free, no
 * container, no image, no command run). The terminal's fields
 * (`pty_info`), `workdir` with NUL, an unknown `pty_type`, empty secret ids
 * in `secret_ids` and `secret_sources`, and an unset `ttl_seconds` on a
 * filesystem snapshot (PROTOCOL-LATER §5.7). Symlink loops in a workdir
 * (runc): test/runc-workdir-loop.test.ts.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ImagesAdminClient } from "../src/client/images.ts";
import type { TestRouter } from "./helpers/router.ts";
import { expectStatus, FD, grpc, STDOUT, type WireClient } from "./helpers/wire-client.ts";
import { closeWireSuite, nextId, openWireSuite, type WireSuite } from "./helpers/wire-common.ts";

const { status } = grpc;

describe("TaskExecStart / TaskContainerCreate / TaskSnapshotFilesystem field refusals", () => {
  let r: TestRouter;
  let w: WireClient;
  let task: string;
  let dir: string;
  let suite: WireSuite | undefined;
  before(async () => {
    suite = await openWireSuite("taskrouter-validate-");
    ({ r, w, task, dir } = suite);
  });
  after(() => closeWireSuite(suite));

  const pty = (fields: Record<string, unknown>) => ({ pty_info: { enabled: true, ...fields } });

  it("TaskExecStart: INVALID_ARGUMENT naming the field; nothing runs, the exec_id stays free", async () => {
    const marker = join(dir, "ran");
    // Under the old code a NUL in TERM shifted the agent's request: this ran `sh -c "touch ..."`.
    const smuggle = `xterm\0/bin/sh\0-c\0touch ${marker}`;
    const cases: [string, Record<string, unknown>, RegExp][] = [
      ["NUL in env_term", pty({ env_term: smuggle }), /pty_info\.env_term .*NUL/],
      ["NUL in env_colorterm", pty({ env_colorterm: `x\0y` }), /pty_info\.env_colorterm .*NUL/],
      [
        "NUL in env_term_program",
        pty({ env_term_program: `x\0y` }),
        /pty_info\.env_term_program .*NUL/,
      ],
      ["winsz_rows 65536", pty({ winsz_rows: 65536 }), /pty_info\.winsz_rows .*1-65535.*65536/],
      ["winsz_cols 70000", pty({ winsz_cols: 70000 }), /pty_info\.winsz_cols .*1-65535.*70000/],
      ["pty_type 99", pty({ pty_type: 99 }), /unknown pty_info\.pty_type 99/],
      ["NUL in workdir", { workdir: `${dir}/a\0b` }, /workdir .*NUL/],
      [
        "empty secret_sources[0].secret_id",
        { secret_sources: [{ secret_id: "" }] },
        /^secret_sources\[0\]\.secret_id must not be empty/,
      ],
      [
        "empty secret_sources[1].secret_id",
        { secret_sources: [{ env: { contents: { A: "1" } } }, { secret_id: "" }] },
        /^secret_sources\[1\]\.secret_id must not be empty/,
      ],
      [
        "empty secret_ids[1]",
        { secret_ids: ["some-secret", ""] },
        /^secret_ids\[1\] must not be empty/,
      ],
    ];
    for (const [name, patch, details] of cases) {
      const exec_id = nextId("bad");
      const req = {
        task_id: task,
        exec_id,
        command_args: ["echo", "ok"],
        stdout_config: STDOUT.PIPE,
        ...patch,
      };
      await expectStatus(w.start(req as never), status.INVALID_ARGUMENT, details).catch(
        (err: Error) => {
          throw new Error(`${name}: ${err.message}`);
        },
      );
      await expectStatus(w.poll(task, exec_id), status.NOT_FOUND);
      // The id was not taken: a valid request with it runs normally.
      await w.start({
        task_id: task,
        exec_id,
        command_args: ["echo", "ok"],
        stdout_config: STDOUT.PIPE,
      });
      assert.deepEqual(await w.wait(task, exec_id), { code: 0 }, name);
      const out = await w.readAll({ task_id: task, exec_id, file_descriptor: FD.STDOUT });
      assert.equal(out.data.toString(), "ok\n", name);
    }
    assert.equal(existsSync(marker), false, "the text after the NUL never ran");
  });

  it("TaskExecStart: the edges of the accepted ranges still start (sizes 1 and 65535, 0 = 24x80, known pty_types)", async () => {
    const cases = [
      pty({ winsz_rows: 65535, winsz_cols: 1, pty_type: 1 }),
      pty({ winsz_rows: 0, winsz_cols: 0, pty_type: 2 }),
      pty({ pty_type: 0, env_term: "xterm-256color", env_colorterm: "truecolor" }),
      { pty_info: { enabled: false, pty_type: 99, env_term: "a\0b" } }, // not a terminal: ignored
    ];
    for (const patch of cases) {
      const exec_id = nextId("edge");
      await w.start({ task_id: task, exec_id, command_args: ["true"], ...patch });
      assert.deepEqual(await w.wait(task, exec_id), { code: 0 }, JSON.stringify(patch));
    }
  });

  it("TaskContainerCreate: a workdir with NUL and an empty secret_sources secret_id; no container made", async () => {
    const base = { task_id: task, container_name: "side", image_id: "img-none", args: ["true"] };
    await expectStatus(
      w.unary("TaskContainerCreate", { ...base, workdir: "/a\0b" }),
      status.INVALID_ARGUMENT,
      /workdir .*NUL/,
    );
    await expectStatus(
      w.unary("TaskContainerCreate", { ...base, secret_sources: [{ secret_id: "" }] }),
      status.INVALID_ARGUMENT,
      /^secret_sources\[0\]\.secret_id must not be empty/,
    );
    const list = await w.unary("TaskContainerList", { task_id: task });
    const names = (list.containers as { container_name: string }[]).map((c) => c.container_name);
    assert.deepEqual(names, ["main"]);
  });

  it("TaskSnapshotFilesystem: unset ttl_seconds is INVALID_ARGUMENT (set, the host task's refusal follows)", async () => {
    const admin = new ImagesAdminClient(r.client);
    const before = (await admin.list()).length;
    const req = { task_id: task, snapshot_id: nextId("snap") };
    await expectStatus(
      w.unary("TaskSnapshotFilesystem", req),
      status.INVALID_ARGUMENT,
      /ttl_seconds is required/,
    );
    await expectStatus(
      w.unary("TaskSnapshotFilesystem", { ...req, ttl_seconds: 2_592_000 }),
      status.FAILED_PRECONDITION,
      /host runtime/,
    );
    assert.equal((await admin.list()).length, before, "no image made");
  });
});
