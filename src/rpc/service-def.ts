import {
  type DescMessage,
  type DescService,
  fromBinary,
  type MessageShape,
  ScalarType,
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
  const only = desc.fields.length === 1 ? desc.fields[0] : undefined;
  if (only?.fieldKind === "scalar" && only.scalar === ScalarType.BYTES && only.number < 16) {
    // Hot path (output chunks): a message that is one bytes field is its tag,
    // the length and the bytes, written with one allocation and one copy.
    const tag = (only.number << 3) | 2;
    const name = only.localName;
    return (msg: unknown): Buffer => {
      const data = (msg as Record<string, Uint8Array>)[name] as Uint8Array;
      if (data.length === 0) return Buffer.alloc(0);
      let n = data.length;
      let hdr = 2;
      while (n >= 0x80) {
        n >>>= 7;
        hdr++;
      }
      const out = Buffer.allocUnsafe(hdr + data.length);
      out[0] = tag;
      let i = 1;
      for (n = data.length; n >= 0x80; n >>>= 7) out[i++] = (n & 0x7f) | 0x80;
      out[i] = n;
      out.set(data, hdr);
      return out;
    };
  }
  return (msg: unknown): Buffer => {
    const bytes = toBinary(desc, msg as MessageShape<D>);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer<D extends DescMessage>(desc: D) {
  return (buf: Buffer): MessageShape<D> => fromBinary(desc, buf);
}
