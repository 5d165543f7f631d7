/**
 * Server reflection (grpc.reflection.v1 and v1alpha) driven by an independent
 * grpc-js client: @grpc/proto-loader loads the reflection .proto, as a tool
 * like grpcurl would; the answers are decoded as FileDescriptorProtos and
 * used to call the router's services the way grpcurl does.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { create, createFileRegistry, type DescService, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { grpcServiceDef } from "../src/rpc/service-def.ts";
import { SERVICE_POLICY } from "../src/server/transport/auth.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";

const PROTO_DIR = fileURLToPath(new URL("../proto", import.meta.url));

/** Every service a router with images, secrets, volumes and memory snapshots serves. */
const SERVICES = [
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
  "modal.task_command_router.TaskCommandRouter",
  "taskrouter.v1.Execs",
  "taskrouter.v1.Images",
  "taskrouter.v1.MemorySnapshots",
  "taskrouter.v1.Secrets",
  "taskrouter.v1.Tasks",
  "taskrouter.v1.Volumes",
];

type Version = "v1" | "v1alpha";

interface ReflectionResponse {
  list_services_response?: { service: { name: string }[] };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  error_response?: { error_code: number; error_message: string };
}

/** A reflection client of `version` on `address`: one request per bidi stream. */
function reflectionClient(address: string, version: Version, token?: string) {
  const def = protoLoader.loadSync(`grpc/reflection/${version}/reflection.proto`, {
    keepCase: true,
    oneofs: true,
    includeDirs: [PROTO_DIR],
  });
  const Ctor = grpc.makeGenericClientConstructor(
    def[`grpc.reflection.${version}.ServerReflection`] as grpc.ServiceDefinition,
    "ServerReflection",
  );
  const client = new Ctor(address, grpc.credentials.createInsecure());
  const ask = (req: object) =>
    new Promise<ReflectionResponse>((resolve, reject) => {
      const md = new grpc.Metadata();
      if (token) md.set("authorization", `Bearer ${token}`);
      const call = (
        client as unknown as {
          ServerReflectionInfo(
            md: grpc.Metadata,
          ): grpc.ClientDuplexStream<object, ReflectionResponse>;
        }
      ).ServerReflectionInfo(md);
      call.once("data", (res: ReflectionResponse) => {
        resolve(res);
        call.end();
      });
      call.once("error", reject);
      call.write(req);
    });
  return {
    list: async () =>
      ((await ask({ list_services: "" })).list_services_response?.service ?? [])
        .map((s) => s.name)
        .sort(),
    /** The file defining `symbol` and the files it imports, as FileDescriptorProto bytes. */
    fileOf: async (symbol: string) => {
      const res = await ask({ file_containing_symbol: symbol });
      if (res.error_response) throw new Error(res.error_response.error_message);
      return res.file_descriptor_response?.file_descriptor_proto ?? [];
    },
    close: () => client.close(),
  };
}

/** The service `name` as reflection describes it (its file and imports, as grpcurl builds it). */
async function describeService(
  c: ReturnType<typeof reflectionClient>,
  name: string,
): Promise<DescService> {
  // The answer is the file defining `name` first, then the files it imports (in no set order).
  const [file, ...imports] = (await c.fileOf(name)).map((b) =>
    fromBinary(FileDescriptorProtoSchema, b),
  );
  assert.ok(file, `no file for ${name}`);
  const byName = new Map(imports.map((f) => [f.name, f]));
  const registry = createFileRegistry(file, (n) => byName.get(n));
  const svc = registry.getService(name);
  assert.ok(svc, `${name} not in its reflected file`);
  return svc;
}

/** A unary call of `method` of `svc` built from reflected descriptors only. */
function callUnary(
  address: string,
  svc: DescService,
  method: string,
  req: Record<string, unknown>,
  token?: string,
) {
  const def = grpcServiceDef(svc);
  const m = svc.methods.find((x) => x.name === method);
  assert.ok(m);
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  if (token) md.set("authorization", `Bearer ${token}`);
  const md2 = def[m.localName] as grpc.MethodDefinition<unknown, unknown>;
  return new Promise<unknown>((resolve, reject) => {
    client.makeUnaryRequest(
      md2.path,
      md2.requestSerialize,
      md2.responseDeserialize,
      create(m.input, req),
      md,
      (err, res) => {
        client.close();
        if (err) reject(err);
        else resolve(res);
      },
    );
  });
}

for (const version of ["v1", "v1alpha"] as const) {
  describe(`server reflection ${version}`, () => {
    let r: TestRouter;
    before(async () => {
      r = await startRouter({ auth: { mode: "jwt" } });
    });
    after(() => r?.close());

    it("lists every service to a caller with a token", async () => {
      const c = reflectionClient(r.address, version, r.adminToken);
      try {
        assert.deepEqual(await c.list(), SERVICES);
      } finally {
        c.close();
      }
    });

    it("describes every service with each of its methods, and they can be called", async () => {
      const c = reflectionClient(r.address, version, r.adminToken);
      try {
        for (const name of SERVICES) {
          const svc = await describeService(c, name);
          assert.ok(svc.methods.length > 0, name);
        }
        const router = await describeService(c, "modal.task_command_router.TaskCommandRouter");
        assert.ok(router.methods.some((m) => m.name === "TaskExecStart"));
        // Called the way grpcurl calls: descriptors from reflection, nothing compiled in.
        const health = await describeService(c, "grpc.health.v1.Health");
        const res = (await callUnary(r.address, health, "Check", {})) as { status: number };
        assert.equal(res.status, 1); // SERVING
        const tasks = await describeService(c, "taskrouter.v1.Tasks");
        await callUnary(r.address, tasks, "ListTasks", {}, r.adminToken);
        await assert.rejects(
          callUnary(
            r.address,
            router,
            "TaskExecPoll",
            { taskId: "nope", execId: "x" },
            r.adminToken,
          ),
          (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND,
        );
      } finally {
        c.close();
      }
    });

    it("answers NOT_FOUND for an unknown symbol", async () => {
      const c = reflectionClient(r.address, version, r.adminToken);
      try {
        await assert.rejects(c.fileOf("no.such.Service"), /not found|unknown|symbol/i);
      } finally {
        c.close();
      }
    });

    it("lists services without a token (reflection is open, like health)", async () => {
      assert.equal(SERVICE_POLICY[`grpc.reflection.${version}.ServerReflection`], "open");
      const c = reflectionClient(r.address, version);
      try {
        assert.deepEqual(await c.list(), SERVICES);
      } finally {
        c.close();
      }
    });
  });
}
