/**
 * The edge against bad input (issue 15, findings 1, 4 and 6): malformed
 * bodies are INVALID_ARGUMENT (never INTERNAL), a call without a valid token
 * is UNAUTHENTICATED whatever its body, several `authorization` headers are
 * UNAUTHENTICATED, and compressed bodies are refused before they are
 * inflated unless the call is authenticated (and capped when it is).
 */
import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { createGzip, deflateSync, gzipSync } from "node:zlib";
import { create, toBinary } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { issueToken } from "../src/auth/tokens.ts";
import {
  TaskExecPollRequestSchema,
  TaskExecStdinWriteStreamRequestSchema,
} from "../src/gen/modal_proto/task_command_router_pb.ts";
import { ImportFormat, ImportImageRequestSchema } from "../src/gen/taskrouter/v1/images_pb.ts";
import { HOUR } from "./helpers/auth-common.ts";
import { type LoggedRouter, startLoggedRouter } from "./helpers/logged-router.ts";
import { grpcFrame, headerBlock, rawCall, startHeaderSwapProxy } from "./helpers/raw-h2.ts";

const MiB = 1024 * 1024;
const ROUTER = "/modal.task_command_router.TaskCommandRouter";
const POLL = `${ROUTER}/TaskExecPoll`;
const READ = `${ROUTER}/TaskExecStdioRead`;
const STDIN_STREAM = `${ROUTER}/TaskExecStdinWriteStream`;
const CREATE_TASK = "/taskrouter.v1.Tasks/CreateTask";
const IMPORT = "/taskrouter.v1.Images/ImportImage";
const HEALTH = "/grpc.health.v1.Health/Check";

/** Bodies no message decodes from: bad tag, invalid UTF-8, truncation, an 11-byte varint. */
const GARBAGE: Buffer[] = [
  Buffer.from([0x0f]),
  Buffer.from([0x0a, 0x02, 0xff, 0xfe]),
  Buffer.from([0x0a, 0x05, 0x61]),
  Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
];

/** Bodies Health's decoder (protobufjs) refuses: wire types 7 and 6. */
const HEALTH_GARBAGE = [Buffer.from([0x0f]), Buffer.from([0x0e])];

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
/** No rule errors were logged (an INTERNAL answer logs one). */
const noErrorsLogged = (r: LoggedRouter) =>
  assert.deepEqual(
    r.logs.filter((l) => (l.level as number) >= 50),
    [],
    "the router logged errors",
  );

/** 120 MiB of zeros, gzip-compressed (about 120 KiB), made without holding 120 MiB. */
async function gzipBomb(inflated: number): Promise<Buffer> {
  const zero = Buffer.alloc(MiB);
  const src = Readable.from(
    (function* () {
      for (let n = 0; n < inflated; n += MiB)
        yield n + MiB <= inflated ? zero : zero.subarray(0, inflated - n);
    })(),
  );
  const parts: Buffer[] = [];
  for await (const c of src.pipe(createGzip())) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

describe("edge hardening (serve --auth jwt)", () => {
  let r: LoggedRouter;
  let taskToken: string;
  before(async () => {
    r = await startLoggedRouter({ auth: { mode: "jwt" } });
    await r.newTask("t1");
    const key = r.daemon.signingKey;
    assert.ok(key);
    taskToken = await issueToken(key, { task: "t1" }, HOUR);
  });
  after(async () => {
    await r.close();
  });

  it("a call without a valid token is UNAUTHENTICATED whatever its body", async () => {
    for (const path of [POLL, READ, STDIN_STREAM, CREATE_TASK, IMPORT]) {
      for (const headers of [{}, bearer("not.a.token"), { authorization: "Basic x" }]) {
        for (const body of GARBAGE) {
          const res = await rawCall(r.address, path, headers, grpcFrame(body));
          assert.equal(res.code, status.UNAUTHENTICATED, `${path} ${JSON.stringify(headers)}`);
        }
      }
    }
    noErrorsLogged(r);
  });

  it("a malformed body with a valid token is INVALID_ARGUMENT, on every kind of method", async () => {
    const cases: [string, string][] = [
      [POLL, taskToken],
      [READ, taskToken],
      [STDIN_STREAM, taskToken],
      [CREATE_TASK, r.adminToken as string],
      [IMPORT, r.adminToken as string],
    ];
    for (const [path, token] of cases) {
      for (const body of GARBAGE) {
        const res = await rawCall(r.address, path, bearer(token), grpcFrame(body));
        assert.equal(res.code, status.INVALID_ARGUMENT, `${path}: ${res.message}`);
        assert.match(res.message, /malformed request message/);
      }
    }
    // Health's decoder (protobufjs) is lenient (invalid UTF-8, a string cut short and a long
    // varint are read as what they hold); it refuses bad wire types.
    for (const body of HEALTH_GARBAGE) {
      const res = await rawCall(r.address, HEALTH, {}, grpcFrame(body));
      assert.equal(res.code, status.INVALID_ARGUMENT, `health: ${res.message}`);
    }
    noErrorsLogged(r);
  });

  it("a task token on an admin service is refused before its body is read", async () => {
    const res = await rawCall(
      r.address,
      CREATE_TASK,
      bearer(taskToken),
      grpcFrame(GARBAGE[0] as Buffer),
    );
    assert.equal(res.code, status.PERMISSION_DENIED);
  });

  it("a client stream whose second message is broken ends INVALID_ARGUMENT, nothing logged", async () => {
    const execId = await r.client.start("t1", ["cat"], { stdout: "pipe" });
    const start = toBinary(
      TaskExecStdinWriteStreamRequestSchema,
      create(TaskExecStdinWriteStreamRequestSchema, {
        payload: { case: "start", value: { taskId: "t1", execId, offset: 0n } },
      }),
    );
    const header = toBinary(
      ImportImageRequestSchema,
      create(ImportImageRequestSchema, {
        part: { case: "header", value: { format: ImportFormat.TREE } },
      }),
    );
    for (const [path, token, first] of [
      [STDIN_STREAM, taskToken, start],
      [IMPORT, r.adminToken as string, header],
    ] as const) {
      for (const bad of GARBAGE) {
        const body = Buffer.concat([grpcFrame(first), grpcFrame(bad)]);
        const res = await rawCall(r.address, path, bearer(token), body);
        assert.equal(res.code, status.INVALID_ARGUMENT, `${path}: ${res.message}`);
      }
    }
    await sleep(100); // a handler that failed late would log now
    noErrorsLogged(r);
    await r.client.writeStdin("t1", execId, 0, Buffer.alloc(0), true);
    assert.deepEqual(await r.client.wait("t1", execId), { code: 0 });
    noErrorsLogged(r); // and again after more calls went through the same router
  });

  it("several authorization headers: UNAUTHENTICATED, even when each is valid", async () => {
    const body = grpcFrame(
      toBinary(
        TaskExecPollRequestSchema,
        create(TaskExecPollRequestSchema, { taskId: "t1", execId: "x" }),
      ),
    );
    const pairs: [string, string][] = [
      [`Bearer ${taskToken}`, `Bearer ${taskToken}`],
      [`Bearer ${taskToken}`, `Bearer ${r.adminToken}`],
      [`Bearer ${r.adminToken}`, "Bearer not.a.token"],
    ];
    for (const [a, b] of pairs) {
      const block = headerBlock([
        [":method", "POST"],
        [":scheme", "http"],
        [":path", POLL],
        [":authority", "127.0.0.1"],
        ["content-type", "application/grpc"],
        ["te", "trailers"],
        ["authorization", a],
        ["authorization", b],
      ]);
      const proxy = await startHeaderSwapProxy(r.address, block);
      try {
        const res = await rawCall(proxy.address, POLL, {}, body);
        assert.equal(res.code, status.UNAUTHENTICATED, res.message);
      } finally {
        await proxy.close();
      }
    }
    // The same request with one of those headers gets through (NOT_FOUND: no exec "x").
    const one = await rawCall(r.address, POLL, bearer(taskToken), body);
    assert.equal(one.code, status.NOT_FOUND, one.message);
  });

  it("compressed bodies without a valid token are refused before they are inflated", async () => {
    const bomb = await gzipBomb(120 * MiB);
    assert.ok(bomb.length < 1 * MiB);
    const rss0 = process.memoryUsage.rss();
    let peak = rss0;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage.rss());
    }, 5);
    try {
      const calls = [];
      for (let i = 0; i < 16; i++) {
        const headers = { "grpc-encoding": "gzip", ...(i % 2 ? bearer("x.y.z") : {}) };
        calls.push(
          rawCall(r.address, i % 4 < 2 ? POLL : CREATE_TASK, headers, grpcFrame(bomb, true)),
        );
      }
      for (const res of await Promise.all(calls)) assert.equal(res.code, status.UNAUTHENTICATED);
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, process.memoryUsage.rss());
    assert.ok(peak - rss0 < 64 * MiB, `RSS grew by ${Math.round((peak - rss0) / MiB)} MiB`);
    // Health needs no token, so it takes no compressed body at all.
    const h = await rawCall(r.address, HEALTH, { "grpc-encoding": "gzip" }, grpcFrame(bomb, true));
    assert.equal(h.code, status.UNIMPLEMENTED, h.message);
    const ok = await rawCall(r.address, HEALTH, {}, grpcFrame(Buffer.alloc(0)));
    assert.equal(ok.code, status.OK);
  });

  it("authenticated compressed bodies work, corrupt ones are INVALID_ARGUMENT, inflation is capped", async () => {
    const poll = toBinary(
      TaskExecPollRequestSchema,
      create(TaskExecPollRequestSchema, { taskId: "t1", execId: "nope" }),
    );
    const auth = bearer(taskToken);
    for (const [enc, data] of [
      ["gzip", gzipSync(poll)],
      ["deflate", deflateSync(poll)],
    ] as const) {
      const res = await rawCall(
        r.address,
        POLL,
        { ...auth, "grpc-encoding": enc },
        grpcFrame(data, true),
      );
      assert.equal(res.code, status.NOT_FOUND, `${enc}: ${res.message}`);
      const bad = Buffer.from(data);
      bad.fill(0x55, 2, 10);
      const res2 = await rawCall(
        r.address,
        POLL,
        { ...auth, "grpc-encoding": enc },
        grpcFrame(bad, true),
      );
      assert.equal(res2.code, status.INVALID_ARGUMENT, `${enc}: ${res2.message}`);
    }
    const big = await gzipBomb(128 * MiB + 1);
    const res = await rawCall(
      r.address,
      POLL,
      { ...auth, "grpc-encoding": "gzip" },
      grpcFrame(big, true),
    );
    assert.equal(res.code, status.RESOURCE_EXHAUSTED, res.message);
    noErrorsLogged(r);
  });
});

describe("edge hardening (serve --auth none)", () => {
  let r: LoggedRouter;
  before(async () => {
    r = await startLoggedRouter();
  });
  after(async () => {
    await r.close();
  });

  it("malformed bodies are INVALID_ARGUMENT", async () => {
    for (const path of [POLL, READ, STDIN_STREAM, CREATE_TASK, IMPORT, HEALTH]) {
      for (const body of path === HEALTH ? HEALTH_GARBAGE : GARBAGE) {
        const res = await rawCall(r.address, path, {}, grpcFrame(body));
        assert.equal(res.code, status.INVALID_ARGUMENT, `${path}: ${res.message}`);
      }
    }
    noErrorsLogged(r);
  });
});
