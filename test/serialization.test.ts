import assert from "node:assert/strict";
import { it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  TaskExecStdioReadResponseSchema as Chunk,
  TaskExecStdinWriteRequestSchema as StdinWrite,
  TaskCommandRouter,
} from "../src/gen/modal_proto/task_command_router_pb.ts";
import { grpcServiceDef } from "../src/rpc/service-def.ts";

it("the output-chunk fast path encodes exactly as protobuf-es", () => {
  const def = grpcServiceDef(TaskCommandRouter).taskExecStdioRead;
  assert.ok(def);
  const sizes = [0, 1, 127, 128, 300, 16383, 16384, 65536, 1048576, 2097151, 2097152];
  for (const n of sizes) {
    const data = Buffer.alloc(n, n % 251);
    const fast = def.responseSerialize(create(Chunk, { data }));
    const reference = Buffer.from(toBinary(Chunk, create(Chunk, { data })));
    assert.ok(fast.equals(reference), `size ${n}`);
    assert.equal(fromBinary(Chunk, fast).data.length, n);
  }
});

it("large bytes fields are appended by hand and read back by protobuf-es and protobufjs", async () => {
  const { loadSync } = await import("@grpc/proto-loader");
  const pkg = loadSync("modal_proto/task_command_router.proto", {
    includeDirs: ["proto"],
    keepCase: true,
    longs: String,
    defaults: true,
  });
  const svc = pkg["modal.task_command_router.TaskCommandRouter"] as unknown as Record<
    string,
    { requestDeserialize: (b: Buffer) => Record<string, unknown> }
  >;
  const def = grpcServiceDef(TaskCommandRouter).taskExecStdinWrite;
  assert.ok(def && svc.TaskExecStdinWrite);
  for (const n of [0, 10, 32 * 1024, 1 << 20, 16 << 20]) {
    const data = Buffer.alloc(n);
    for (let i = 0; i < n; i += 4096) data[i] = i % 256;
    const msg = create(StdinWrite, {
      taskId: "ta-1",
      execId: "e",
      offset: 12345678901n,
      data,
      eof: true,
    });
    const wire: Buffer = def.requestSerialize(msg);
    const back: ReturnType<typeof fromBinary<typeof StdinWrite>> = fromBinary(StdinWrite, wire);
    assert.equal(back.taskId, "ta-1");
    assert.equal(back.execId, "e");
    assert.equal(back.offset, 12345678901n);
    assert.equal(back.eof, true);
    assert.ok(Buffer.from(back.data).equals(data), `protobuf-es, size ${n}`);
    const other: Record<string, unknown> = svc.TaskExecStdinWrite.requestDeserialize(wire);
    assert.equal(other.offset, "12345678901");
    assert.equal(other.eof, true);
    assert.ok(Buffer.from(other.data as Uint8Array).equals(data), `protobufjs, size ${n}`);
  }
});
