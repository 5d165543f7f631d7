/**
 * Issue 15, finding 5: every id and path has a documented length limit
 * (src/limits.ts, docs/DECISIONS.md "Limits"): exactly the limit is accepted,
 * one byte more is INVALID_ARGUMENT, and no error quotes more than a short
 * part of what the client sent. Driven through the independent wire client.
 */
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { issueToken } from "../src/auth/tokens.ts";
import { SecretsClient } from "../src/client/secrets.ts";
import { checkMaxBytes, MAX, QUOTE_CHARS, quote } from "../src/limits.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { expectStatus, grpc, WireClient } from "./helpers/wire-client.ts";

const { status } = grpc;
const x = (n: number, c = "x") => c.repeat(n);

/** Asserts an error message quotes no run of more than QUOTE_CHARS of `c` and is short. */
function short(err: grpc.ServiceError, c = "x"): void {
  assert.ok(err.details.length < 400, `details too long: ${err.details.length}`);
  assert.ok(!err.details.includes(x(QUOTE_CHARS + 1, c)), err.details);
}

describe("limits: quote and checkMaxBytes", () => {
  it("quote keeps at most QUOTE_CHARS characters of the value and says how long it was", () => {
    assert.equal(quote("abc"), '"abc"');
    assert.equal(quote(x(QUOTE_CHARS)), JSON.stringify(x(QUOTE_CHARS)));
    const q = quote(x(100_000));
    assert.ok(q.length < QUOTE_CHARS + 30, q);
    assert.match(q, /…" \(100000 bytes\)$/);
    const p = quote(`/start/${x(5000, "m")}/the-end`, { ends: true });
    assert.match(p, /^"\/start.*…m*\/the-end" \(\d+ bytes\)$/);
    assert.equal(quote("a\nb\u0000"), '"a\\nb\\u0000"');
  });

  it("checkMaxBytes counts UTF-8 bytes", () => {
    checkMaxBytes("f", "é".repeat(5), 10);
    assert.throws(() => checkMaxBytes("f", "é".repeat(6), 10), /f is 12 bytes, more than .* 10/);
    checkMaxBytes("f", new Uint8Array(10), 10);
    assert.throws(() => checkMaxBytes("f", new Uint8Array(11), 10), /11 bytes/);
  });
});

describe("limits over the wire: each limit at its boundary", { timeout: 120_000 }, () => {
  let r: TestRouter;
  let w: WireClient;
  let task: string;
  let work: string;

  before(async () => {
    r = await startRouter();
    w = new WireClient(r.address);
    task = await r.newTask();
    work = join(r.dataDir, "tasks", task, "work");
  });
  after(async () => {
    w?.close();
    await r?.close();
  });

  const start = (fields: Record<string, unknown>) =>
    w.unary("TaskExecStart", { task_id: task, exec_id: "e", command_args: ["true"], ...fields });

  it("task_id: 128 bytes NOT_FOUND (or created), 129 INVALID_ARGUMENT; 100 KB gets a short message", async () => {
    await expectStatus(
      w.unary("TaskExecPoll", { task_id: x(MAX.taskId), exec_id: "e" }),
      status.NOT_FOUND,
    );
    await expectStatus(
      w.unary("TaskExecPoll", { task_id: x(MAX.taskId + 1), exec_id: "e" }),
      status.INVALID_ARGUMENT,
      /task_id is 129 bytes, more than the limit of 128/,
    );
    for (const method of ["TaskExecStart", "TaskExecPoll", "TaskExecWait", "TaskMountDirectory"]) {
      const err = await expectStatus(
        w.unary(method, {
          task_id: x(100_000),
          exec_id: "e",
          command_args: ["true"],
          path: Buffer.from(`${work}/m`),
        }),
        status.INVALID_ARGUMENT,
      );
      short(err);
    }
    assert.equal(await r.newTask(x(MAX.taskId, "t")), x(MAX.taskId, "t"));
    await assert.rejects(r.newTask(x(MAX.taskId + 1, "t")), /task_id is 129 bytes/);
    assert.equal(r.daemon.tasks.list().length, 2);
  });

  it("a 100 KB task_id with a task token: PERMISSION_DENIED with a short message", async () => {
    const j = await startRouter({ auth: { mode: "jwt" } });
    const raw = new WireClient(j.address).raw as unknown as Record<
      string,
      (
        req: unknown,
        md: grpc.Metadata,
        opts: grpc.CallOptions,
        cb: (err: grpc.ServiceError | null) => void,
      ) => void
    >;
    try {
      const t = await j.newTask();
      const key = j.daemon.signingKey;
      assert.ok(key);
      const md = new grpc.Metadata();
      md.set("authorization", `Bearer ${await issueToken(key, { task: t }, 60_000)}`);
      const poll = raw.TaskExecPoll as NonNullable<typeof raw.TaskExecPoll>;
      const call = new Promise<void>((resolve, reject) =>
        poll.call(
          raw,
          { task_id: x(100_000), exec_id: "e" },
          md,
          { deadline: Date.now() + 10_000 },
          (err) => (err ? reject(err) : resolve()),
        ),
      );
      short(await expectStatus(call, status.PERMISSION_DENIED));
    } finally {
      (raw as unknown as grpc.Client).close();
      await j.close();
    }
  });

  it("exec_id: 256 bytes starts, 257 and 1 MiB are INVALID_ARGUMENT and nothing is kept", async () => {
    const ok = x(MAX.execId);
    await start({ exec_id: ok });
    assert.deepEqual(await w.wait(task, ok), { code: 0 });
    const before = r.daemon.tasks.listExecs(task).length;
    for (const id of [x(MAX.execId + 1), x(1024 * 1024)]) {
      short(await expectStatus(start({ exec_id: id }), status.INVALID_ARGUMENT, /exec_id is/));
      short(
        await expectStatus(
          w.unary("TaskExecPoll", { task_id: task, exec_id: id }),
          status.INVALID_ARGUMENT,
        ),
      );
      short(
        await expectStatus(
          w.unary("TaskExecStdinWrite", { task_id: task, exec_id: id, data: Buffer.from("x") }),
          status.INVALID_ARGUMENT,
        ),
      );
    }
    await expectStatus(
      w.unary("TaskExecPoll", { task_id: task, exec_id: x(MAX.execId, "y") }),
      status.NOT_FOUND,
    );
    assert.equal(r.daemon.tasks.listExecs(task).length, before);
  });

  it("secret names and secret_ids: 128 bytes fine, 129 INVALID_ARGUMENT", async () => {
    const secrets = new SecretsClient(r.client);
    await secrets.create(x(MAX.secretName, "s"), { K: "v" });
    await assert.rejects(secrets.create(x(MAX.secretName + 1, "s"), { K: "v" }), /secret name/);
    const unknown = await start({ exec_id: "sec-1", secret_ids: [x(MAX.secretName)] }).catch(
      (e: grpc.ServiceError) => e,
    );
    assert.ok("code" in unknown && unknown.code !== status.INVALID_ARGUMENT, String(unknown));
    short(
      await expectStatus(
        start({ exec_id: "sec-2", secret_ids: [x(100_000)] }),
        status.INVALID_ARGUMENT,
        /secret id is 100000 bytes/,
      ),
    );
    assert.equal(
      r.daemon.tasks.listExecs(task).filter((e) => e.execId.startsWith("sec")).length,
      0,
    );
  });

  it("container_id: 128 bytes NOT_FOUND, 129 INVALID_ARGUMENT (exec and images)", async () => {
    await expectStatus(start({ container_id: x(MAX.containerId) }), status.NOT_FOUND);
    short(await expectStatus(start({ container_id: x(100_000) }), status.INVALID_ARGUMENT));
    const path = Buffer.from(`${work}/c`);
    await expectStatus(
      w.unary("TaskMountDirectory", { task_id: task, path, container_id: x(MAX.containerId) }),
      status.NOT_FOUND,
    );
    await expectStatus(
      w.unary("TaskMountDirectory", { task_id: task, path, container_id: x(MAX.containerId + 1) }),
      status.INVALID_ARGUMENT,
    );
  });

  it("image_id: 128 bytes NOT_FOUND, 129 INVALID_ARGUMENT", async () => {
    const path = Buffer.from(`${work}/img`);
    await expectStatus(
      w.unary("TaskMountDirectory", { task_id: task, path, image_id: x(MAX.imageId) }),
      status.NOT_FOUND,
    );
    short(
      await expectStatus(
        w.unary("TaskMountDirectory", { task_id: task, path, image_id: x(100_000) }),
        status.INVALID_ARGUMENT,
        /image_id is/,
      ),
    );
    await assert.rejects(r.daemon.images.inspect(x(MAX.imageId + 1)), /image_id is 129 bytes/);
    await assert.rejects(r.daemon.images.delete(x(MAX.imageId)), /not found/);
  });

  it("snapshot_id: 256 bytes makes an image, 257 INVALID_ARGUMENT", async () => {
    await mkdir(join(work, "snap"), { recursive: true });
    const path = Buffer.from(join(work, "snap"));
    const res = await w.unary("TaskSnapshotDirectory", {
      task_id: task,
      path,
      snapshot_id: x(MAX.snapshotId),
    });
    assert.match(String(res.image_id), /^im-/);
    short(
      await expectStatus(
        w.unary("TaskSnapshotDirectory", { task_id: task, path, snapshot_id: x(100_000) }),
        status.INVALID_ARGUMENT,
        /snapshot_id is/,
      ),
    );
  });

  it("paths: 4095 bytes and 255-byte components pass the check, one more byte does not", async () => {
    const comp = x(MAX.pathComponent);
    let p = `${work}/`;
    while (p.length + comp.length + 1 <= MAX.path) p += `${comp}/`;
    p += x(MAX.path - p.length, "z");
    assert.equal(Buffer.byteLength(p), MAX.path);
    const snap = (path: string) =>
      w.unary("TaskSnapshotDirectory", { task_id: task, path: Buffer.from(path) });
    await expectStatus(snap(p), status.NOT_FOUND);
    short(await expectStatus(snap(`${p}z`), status.INVALID_ARGUMENT, /path is 4096 bytes/));
    short(await expectStatus(snap(`/${x(1024 * 1024)}`), status.INVALID_ARGUMENT));
    await expectStatus(snap(`${work}/${comp}`), status.NOT_FOUND);
    await expectStatus(snap(`${work}/${comp}x`), status.INVALID_ARGUMENT, /path component/);
    // An exec's workdir has the same limit.
    await expectStatus(start({ exec_id: "wd-1", workdir: p }), status.FAILED_PRECONDITION);
    short(
      await expectStatus(
        start({ exec_id: "wd-2", workdir: `${p}z` }),
        status.INVALID_ARGUMENT,
        /workdir is 4096 bytes/,
      ),
    );
    short(
      await expectStatus(start({ exec_id: "wd-3", workdir: x(5000) }), status.INVALID_ARGUMENT),
    );
  });
});
