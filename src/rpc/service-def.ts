import {
  type DescMessage,
  type DescService,
  fromBinary,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";

/**
 * Turns a protobuf-es service descriptor into a grpc-js service definition:
 * the wire paths are `/<package>.<Service>/<Method>` and messages are
 * (de)serialized by protobuf-es. Used by both the server and the client.
 */
export function grpcServiceDef(service: DescService): ServiceDefinition {
  const def: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const m of service.methods) {
    def[m.localName] = {
      path: `/${service.typeName}/${m.name}`,
      requestStream: m.methodKind === "client_streaming" || m.methodKind === "bidi_streaming",
      responseStream: m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming",
      requestSerialize: serializer(m.input),
      requestDeserialize: deserializer(m.input),
      responseSerialize: serializer(m.output),
      responseDeserialize: deserializer(m.output),
      originalName: m.name,
    };
  }
  return def;
}

function serializer<D extends DescMessage>(desc: D) {
  return (msg: unknown): Buffer => {
    const bytes = toBinary(desc, msg as MessageShape<D>);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer<D extends DescMessage>(desc: D) {
  return (buf: Buffer): MessageShape<D> => fromBinary(desc, buf);
}
