/**
 * Independent grpc-js + proto-loader clients of taskrouter's admin services
 * (taskrouter.v1.*), sharing no code with src/: requests and responses are
 * plain snake_case objects, as a grpc-js user of our protos sends them.
 */
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const PROTO_DIR = fileURLToPath(new URL("../../proto", import.meta.url));

type UnaryFn = (
  req: unknown,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: Record<string, unknown>) => void,
) => grpc.ClientUnaryCall;

/**
 * A client of service `service` (e.g. "taskrouter.v1.Tasks") declared in
 * `protoFile`, sending `token` as its bearer token when given.
 */
export class WireAdmin {
  readonly raw: grpc.Client;

  constructor(
    address: string,
    protoFile: string,
    service: string,
    private readonly token?: string,
  ) {
    const def = protoLoader.loadSync(protoFile, {
      keepCase: true,
      longs: String,
      defaults: true,
      oneofs: true,
      includeDirs: [PROTO_DIR],
    });
    const Ctor = grpc.makeGenericClientConstructor(
      def[service] as grpc.ServiceDefinition,
      service,
    ) as unknown as new (
      a: string,
      c: grpc.ChannelCredentials,
    ) => grpc.Client;
    this.raw = new Ctor(address, grpc.credentials.createInsecure());
  }

  /** Any unary method by its proto name (e.g. "CreateTask"). */
  unary(method: string, req: unknown): Promise<Record<string, unknown>> {
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
