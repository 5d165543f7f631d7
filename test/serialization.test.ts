import assert from "node:assert/strict";
import { it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  TaskExecStdioReadResponseSchema as Chunk,
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
