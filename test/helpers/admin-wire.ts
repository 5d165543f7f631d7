/**
 * Independent clients of taskrouter's own admin services (Tasks, Volumes)
 * for wire tests: `@grpc/grpc-js` + `@grpc/proto-loader` on the project's
 * .proto files, sharing no code with src/. Requests and responses are plain
 * snake_case objects.
 */
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const PROTO_DIR = fileURLToPath(new URL("../../proto", import.meta.url));
const defs = protoLoader.loadSync(["taskrouter/v1/tasks.proto", "taskrouter/v1/volumes.proto"], {
  keepCase: true,
  longs: String,
  defaults: true,
  includeDirs: [PROTO_DIR],
});

type UnaryFn = (
  req: unknown,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: Record<string, unknown>) => void,
) => grpc.ClientUnaryCall;

/** A proto-loader client of admin service `service` ("Tasks", "Volumes") on its own channel. */
export class AdminWire {
  private readonly raw: grpc.Client;

  constructor(
    address: string,
    service: "Tasks" | "Volumes",
    private readonly token?: string,
  ) {
    const Ctor = grpc.makeGenericClientConstructor(
      defs[`taskrouter.v1.${service}`] as grpc.ServiceDefinition,
      service,
    );
    this.raw = new Ctor(address, grpc.credentials.createInsecure());
  }

  /** Calls unary method `method` (its proto name, e.g. "CreateVolume"). */
  call(method: string, req: unknown): Promise<Record<string, unknown>> {
    const fn = (this.raw as unknown as Record<string, UnaryFn>)[method] as UnaryFn;
    const md = new grpc.Metadata();
    if (this.token) md.set("authorization", `Bearer ${this.token}`);
    return new Promise((resolve, reject) => {
      fn.call(this.raw, req, md, {}, (err, res) => (err ? reject(err) : resolve(res ?? {})));
    });
  }

  close(): void {
    this.raw.close();
  }
}
