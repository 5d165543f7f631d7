/**
 * The later protocol's exec-level RPCs through the independent grpc-js +
 * proto-loader stack, on every runtime: env carriers (secret_ids, env,
 * secret_sources), container_id, TaskExecStdinWriteStream and
 * TaskExecStdinStatus with their resume rules, the refusals of the network
 * policy RPCs on tasks without an open network, and the answers of the
 * task-level RPCs on a task without an entrypoint, volumes or sidecars.
 */
import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { SecretsClient } from "../src/client/secrets.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { OCI_RUNTIMES, runcSkipReason, startRuncRouter } from "./helpers/runc.ts";
import { expectStatus, FD, grpc, STDERR, STDOUT, WireClient } from "./helpers/wire-client.ts";
import { openStdinStream } from "./helpers/wire-stream.ts";

const variants: { label: string; oci: string | undefined }[] = [
  { label: "host runtime", oci: undefined },
  ...OCI_RUNTIMES.map((o) => ({ label: `runc runtime, ${o.label}`, oci: o.binary })),
];

for (const { label, oci } of variants) {
  const skip = oci ? await runcSkipReason(oci) : undefined;
  describe(`later protocol, exec level (${label})`, { skip }, () => {
    let r: TestRouter;
    let w: WireClient;
    let task: string;
    before(async () => {
      r = oci ? await startRuncRouter({ ociRuntime: oci }) : await startRouter();
      w = new WireClient(r.address);
      task = await r.newTask();
      const secrets = new SecretsClient(r.client);
      await secrets.create("s1", { A: "s1", B: "s1", C: "s1" });
      await secrets.create("s2", { B: "s2" });
    });
    after(async () => {
      w?.close();
      await r?.close();
    });

    /** Starts `sh -c script` with `extra` fields; returns its stdout once it exited 0. */
    const run = async (script: string, extra: Record<string, unknown> = {}) => {
      const exec_id = randomUUID();
      await w.start({
        task_id: task,
        exec_id,
        command_args: ["sh", "-c", script],
        stdout_config: STDOUT.PIPE,
        stderr_config: STDERR.PIPE,
        ...extra,
      });
      assert.deepEqual(await w.wait(task, exec_id), { code: 0 });
      return (
        await w.readAll({ task_id: task, exec_id, file_descriptor: FD.STDOUT })
      ).data.toString();
    };
    /** Reads the exec's stdout until it holds `text` (cat echoes what stdin got). */
    const echoed = async (exec_id: string, text: string) => {
      const stream = w.read({ task_id: task, exec_id });
      let got = "";
      for await (const msg of stream) {
        got += msg.data.toString();
        if (got.includes(text)) break;
      }
      stream.cancel();
      assert.ok(got.includes(text), `stdout ${JSON.stringify(got)} lacks ${text}`);
    };
    const show = 'printf "%s|%s|%s|%s" "$A" "$B" "$C" "$D"';

    it("secret_sources apply in order, later over earlier, inline env last wins", async () => {
      const out = await run(show, {
        secret_sources: [
          { secret_id: "s1" },
          { env: { contents: { C: "inline", D: "d" } } },
          { secret_id: "s2" },
          { env: { contents: { D: "env-option" } } },
        ],
      });
      assert.equal(out, "s1|s2|inline|env-option");
    });

    it("env (field 12) applies over secret_ids (field 8), which apply in order", async () => {
      assert.equal(await run(show, { secret_ids: ["s1", "s2"], env: { C: "e" } }), "s1|s2|e|");
      assert.equal(await run('printf %s "$HOME"', { env: { HOME: "/elsewhere" } }), "/elsewhere");
    });

    it("refuses what it cannot honour, and starts nothing", async () => {
      const refused = async (extra: Record<string, unknown>, code: grpc.status, re: RegExp) => {
        const exec_id = randomUUID();
        const req = { task_id: task, exec_id, command_args: ["true"], ...extra };
        await expectStatus(w.start(req), code, re);
        await expectStatus(w.poll(task, exec_id), grpc.status.NOT_FOUND);
      };
      const mixed = { secret_sources: [{ secret_id: "s1" }], env: { A: "1" } };
      await refused(mixed, grpc.status.INVALID_ARGUMENT, /cannot be combined/);
      const mixedIds = { secret_sources: [{ secret_id: "s1" }], secret_ids: ["s2"] };
      await refused(mixedIds, grpc.status.INVALID_ARGUMENT, /cannot be combined/);
      await refused({ secret_sources: [{}] }, grpc.status.INVALID_ARGUMENT, /neither/);
      await refused({ secret_sources: [{ secret_id: "nope" }] }, grpc.status.NOT_FOUND, /nope/);
      await refused({ env: { "BAD-KEY": "1" } }, grpc.status.INVALID_ARGUMENT, /BAD-KEY/);
      await refused({ container_id: "ctr-x" }, grpc.status.NOT_FOUND, /container "ctr-x"/);
    });

    it("never echoes an inline env value in an error", async () => {
      const err = await expectStatus(
        w.start({
          task_id: task,
          exec_id: randomUUID(),
          command_args: ["true"],
          secret_sources: [{ env: { contents: { OK: "hunter2-value" } } }, { secret_id: "gone" }],
        }),
        grpc.status.NOT_FOUND,
      );
      assert.doesNotMatch(err.details, /hunter2/);
    });

    it("streams stdin: start, data, end; status counts every path", async () => {
      const exec_id = randomUUID();
      await w.start({ task_id: task, exec_id, command_args: ["cat"], stdout_config: 1 });
      await w.write({ task_id: task, exec_id, offset: 0, data: Buffer.from("unary-") });
      const s = openStdinStream(w);
      await s.send({ start: { task_id: task, exec_id, offset: 6 } });
      await s.send({ data: Buffer.from("stream") });
      await s.send({ end: {} });
      await s.finish();
      assert.deepEqual(await w.wait(task, exec_id), { code: 0 });
      const out = await w.readAll({ task_id: task, exec_id });
      assert.equal(out.data.toString(), "unary-stream");
      const st = await w.unary("TaskExecStdinStatus", { task_id: task, exec_id });
      assert.equal(Number(st.num_bytes_written), 12);
      assert.equal(st.closed, true);
    });

    it("a resumed stream skips what was written, and a gap is OUT_OF_RANGE", async () => {
      const exec_id = randomUUID();
      await w.start({ task_id: task, exec_id, command_args: ["cat"], stdout_config: 1 });
      const first = openStdinStream(w);
      await first.send({ start: { task_id: task, exec_id, offset: 0 } });
      await first.send({ data: Buffer.from("abcdef") });
      await echoed(exec_id, "abcdef");
      // A status call evicts the stream in flight: its later data is never applied.
      let st = await w.unary("TaskExecStdinStatus", { task_id: task, exec_id });
      assert.deepEqual([Number(st.num_bytes_written), st.closed], [6, false]);
      await first.send({ data: Buffer.from("LOST") }).catch(() => {}); // may have ended already
      await assert.rejects(first.finish());
      st = await w.unary("TaskExecStdinStatus", { task_id: task, exec_id });
      assert.equal(Number(st.num_bytes_written), 6);

      const gap = openStdinStream(w);
      await gap.send({ start: { task_id: task, exec_id, offset: 7 } });
      await expectStatus(gap.finish(), grpc.status.OUT_OF_RANGE);

      const resume = openStdinStream(w);
      await resume.send({ start: { task_id: task, exec_id, offset: 4 } });
      await resume.send({ data: Buffer.from("efgh") });
      await resume.send({ end: {} });
      await resume.finish();
      assert.deepEqual(await w.wait(task, exec_id), { code: 0 });
      assert.equal((await w.readAll({ task_id: task, exec_id })).data.toString(), "abcdefgh");
    });

    it("a stream cut before `end` leaves stdin open with every byte it applied", async () => {
      const exec_id = randomUUID();
      await w.start({ task_id: task, exec_id, command_args: ["cat"], stdout_config: 1 });
      const s = openStdinStream(w);
      await s.send({ start: { task_id: task, exec_id, offset: 0 } });
      await s.send({ data: Buffer.from("kept") });
      await echoed(exec_id, "kept"); // applied: now cut the stream
      s.cancel();
      await assert.rejects(s.result);
      assert.equal(await w.poll(task, exec_id), undefined, "cat still runs: stdin stays open");
      await w.write({ task_id: task, exec_id, offset: 4, data: Buffer.from("!"), eof: true });
      assert.deepEqual(await w.wait(task, exec_id), { code: 0 });
      assert.equal((await w.readAll({ task_id: task, exec_id })).data.toString(), "kept!");
    });

    it("bad streams: no start, start twice, unknown exec", async () => {
      const exec_id = randomUUID();
      await w.start({ task_id: task, exec_id, command_args: ["cat"] });
      const noStart = openStdinStream(w);
      await noStart.send({ data: Buffer.from("x") });
      await expectStatus(noStart.finish(), grpc.status.INVALID_ARGUMENT, /first message/);
      const twice = openStdinStream(w);
      await twice.send({ start: { task_id: task, exec_id, offset: 0 } });
      await twice.send({ start: { task_id: task, exec_id, offset: 0 } });
      await expectStatus(twice.finish(), grpc.status.INVALID_ARGUMENT, /only be the first/);
      const empty = openStdinStream(w);
      await expectStatus(empty.finish(), grpc.status.INVALID_ARGUMENT, /no `start`/);
      const unknown = openStdinStream(w);
      await unknown.send({ start: { task_id: task, exec_id: "nope", offset: 0 } });
      await expectStatus(unknown.finish(), grpc.status.NOT_FOUND);
      await expectStatus(
        w.unary("TaskExecStdinStatus", { task_id: task, exec_id: "nope" }),
        grpc.status.NOT_FOUND,
      );
      assert.equal(await w.poll(task, exec_id), undefined, "none of it touched stdin");
      await w.write({ task_id: task, exec_id, offset: 0, eof: true });
      assert.deepEqual(await w.wait(task, exec_id), { code: 0 });
    });

    it("a write after exit is FAILED_PRECONDITION, and Poll already shows the exit", async () => {
      const exec_id = randomUUID();
      await w.start({ task_id: task, exec_id, command_args: ["sh", "-c", "exit 4"] });
      const s = openStdinStream(w);
      await s.send({ start: { task_id: task, exec_id, offset: 0 } }).catch(() => {});
      const big = Buffer.alloc(256 * 1024, 1);
      // Keep sending until the router refuses (the process exits at once). Up to 128 MiB: more
      // than a stdin ring (64 MiB) takes with no reader, so the refusal comes whenever `sh` ran.
      let err: grpc.ServiceError | undefined;
      s.result.catch((e: grpc.ServiceError) => {
        err = e;
      });
      for (let i = 0; i < 512 && !err; i++) await s.send({ data: big }).catch(() => {});
      await s.send({ end: {} }).catch(() => {});
      await expectStatus(s.finish(), grpc.status.FAILED_PRECONDITION);
      assert.deepEqual(await w.poll(task, exec_id), { code: 4 });
    });

    it("streams 64 MiB byte-exact (sha256 in the task)", async () => {
      const data = Buffer.alloc(64 * 1024 * 1024);
      for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE((i * 2654435761) >>> 0, i);
      const exec_id = randomUUID();
      await w.start({ task_id: task, exec_id, command_args: ["sha256sum"], stdout_config: 1 });
      const s = openStdinStream(w);
      await s.send({ start: { task_id: task, exec_id, offset: 0 } });
      for (let p = 0; p < data.length; p += 256 * 1024) {
        await s.send({ data: data.subarray(p, p + 256 * 1024) });
      }
      await s.send({ end: {} });
      await s.finish();
      assert.deepEqual(await w.wait(task, exec_id), { code: 0 });
      const out = (await w.readAll({ task_id: task, exec_id })).data.toString();
      assert.equal(out.split(" ")[0], createHash("sha256").update(data).digest("hex"));
    });

    it("task-level RPCs answer for a task without an entrypoint, volumes or sidecars", async () => {
      // Volumes are served (test/volumes-runc.test.ts): a task without volumes reloads none.
      assert.deepEqual(await w.unary("TaskReloadVolumes", { task_id: task }), {});
      // Served now (test/memory-snapshot*.test.ts); a request without its key is malformed.
      await expectStatus(
        w.unary("TaskSnapshotMemory", { task_id: task }),
        grpc.status.INVALID_ARGUMENT,
        /idempotency_key/,
      );
      // The entrypoint RPCs are served: a task created without one is FAILED_PRECONDITION.
      await expectStatus(
        w.unary("SandboxStdinWriteV2", { task_id: task }),
        grpc.status.FAILED_PRECONDITION,
        /no entrypoint/,
      );
      const stream = w.sandboxRead({ task_id: task });
      await expectStatus(
        (async () => {
          for await (const _ of stream) {
            /* no message is expected */
          }
        })(),
        grpc.status.FAILED_PRECONDITION,
        /no entrypoint/,
      );
    });

    // Served for real on --network open tasks: test/network*.test.ts.
    it("TaskSetNetworkAccess and TaskSetOutboundPolicy refuse with their reasons", async () => {
      await expectStatus(
        w.unary("TaskSetNetworkAccess", { task_id: task }),
        grpc.status.INVALID_ARGUMENT,
        /must be ALLOWLIST/,
      );
      const network_access = { network_access_type: 3, allowed_cidrs: ["10.0.0.0/8"] };
      await expectStatus(
        w.unary("TaskSetNetworkAccess", { task_id: task, network_access }),
        grpc.status.FAILED_PRECONDITION,
        oci ? /has network "none"/ : /the host runtime cannot enforce network policies/,
      );
      await expectStatus(
        w.unary("TaskSetOutboundPolicy", { task_id: task }),
        grpc.status.FAILED_PRECONDITION,
        /not created with an outbound policy/,
      );
    });

    // Customer-supplied keys are served: test/images-csek.test.ts.
    it("TaskContainer*: main is listed; sidecars refused where the runtime cannot run them", async () => {
      // Sidecars themselves: test/sidecar.test.ts. Host and runsc refuse them, naming the runtime.
      const create = { task_id: task, container_name: "s", image_id: "im-x", args: ["true"] };
      await expectStatus(
        w.unary("TaskContainerCreate", create),
        oci === undefined || oci.includes("runsc")
          ? grpc.status.FAILED_PRECONDITION
          : grpc.status.NOT_FOUND,
        oci === undefined ? /host runtime/ : oci.includes("runsc") ? /runsc/ : /im-x/,
      );
      const list = await w.unary("TaskContainerList", { task_id: task });
      const names = (list.containers as { container_name: string }[]).map((c) => c.container_name);
      assert.deepEqual(names, ["main"]);
      const main = await w.unary("TaskContainerGet", { task_id: task, container_name: "main" });
      assert.equal((main.container as { status: string }).status, "running");
      await expectStatus(
        w.unary("TaskContainerGet", { task_id: task }),
        grpc.status.INVALID_ARGUMENT,
      );
      for (const method of ["TaskContainerTerminate", "TaskContainerWait"]) {
        await expectStatus(w.unary(method, { task_id: task }), grpc.status.INVALID_ARGUMENT);
        await expectStatus(
          w.unary(method, { task_id: task, container_id: "ctr-1" }),
          grpc.status.NOT_FOUND,
        );
      }
    });

    it("mount, unmount, snapshots and volume reloads refuse an unknown container_id", async () => {
      const path = Buffer.from("/tmp");
      const key = Buffer.alloc(32, 7);
      const calls: [string, Record<string, unknown>, grpc.status][] = [
        ["TaskMountDirectory", { path, container_id: "ctr-1" }, grpc.status.NOT_FOUND],
        ["TaskUnmountDirectory", { path, container_id: "ctr-1" }, grpc.status.NOT_FOUND],
        ["TaskSnapshotDirectory", { path, container_id: "ctr-1" }, grpc.status.NOT_FOUND],
        ["TaskSnapshotFilesystem", { container_id: "ctr-1" }, grpc.status.NOT_FOUND],
        ["TaskReloadVolumes", { container_id: "ctr-1" }, grpc.status.NOT_FOUND],
        [
          "TaskMountDirectory",
          { path, container_id: "ctr-1", customer_supplied_encryption_key: key },
          grpc.status.NOT_FOUND,
        ],
      ];
      for (const [method, fields, code] of calls) {
        const err = await expectStatus(w.unary(method, { task_id: task, ...fields }), code);
        for (const form of [key.toString("latin1"), key.toString("base64"), key.toString("hex")]) {
          assert.ok(!err.details.includes(form.slice(0, 8)), "the key is never echoed");
        }
      }
    });
  });
}
