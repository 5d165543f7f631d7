import {
  type DescMessage,
  type DescService,
  fromBinary,
  type MessageShape,
  ScalarType,
  toBinary,
} from "@bufbuild/protobuf";
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";
import { headroomOf, withHeadroom } from "../util/headroom.ts";

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

/** Bytes fields at least this large are written outside protobuf-es (see `serializer`). */
const LARGE_BYTES = 32 * 1024;

/**
 * Serializes with protobuf-es, except that large top-level `bytes` fields
 * (output chunks, stdin data) are appended by hand after the rest of the
 * message: tag and length in the data's headroom when it has room (no copy),
 * else tag, length, bytes — one allocation and one copy. protobuf-es
 * copies big byte fields several times (a 16 MiB stdin write took 100+ ms).
 * Fields may appear in any order on the wire, so every protobuf parser reads
 * the result as the same message; a message whose only set field is the
 * bytes field encodes exactly as protobuf-es does.
 */
export function serializer<D extends DescMessage>(desc: D) {
  const big = desc.fields.filter(
    (f) => f.fieldKind === "scalar" && f.scalar === ScalarType.BYTES && f.oneof === undefined,
  );
  if (big.length === 0) {
    return (msg: unknown): Buffer => {
      const bytes = toBinary(desc, msg as MessageShape<D>);
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    };
  }
  return (msg: unknown): Buffer => {
    const fields = msg as Record<string, Uint8Array>;
    const large = big.filter((f) => (fields[f.localName]?.length ?? 0) >= LARGE_BYTES);
    if (large.length === 0) {
      const bytes = toBinary(desc, msg as MessageShape<D>);
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    }
    const rest = { ...(msg as object) } as Record<string, unknown>;
    for (const f of large) rest[f.localName] = new Uint8Array(0);
    const head = toBinary(desc, rest as MessageShape<D>);
    const inPlace =
      large.length === 1 && large[0]
        ? inFront(head, large[0].number, fields[large[0].localName] as Uint8Array)
        : undefined;
    if (inPlace) return inPlace;
    let size = head.length;
    for (const f of large) {
      const n = (fields[f.localName] as Uint8Array).length;
      size += varintSize(f.number << 3) + varintSize(n) + n;
    }
    const out = Buffer.allocUnsafe(size);
    out.set(head, 0);
    let pos = head.length;
    for (const f of large) {
      const data = fields[f.localName] as Uint8Array;
      pos = writeVarint(out, pos, (f.number << 3) | 2);
      pos = writeVarint(out, pos, data.length);
      out.set(data, pos);
      pos += data.length;
    }
    return out;
  };
}

/**
 * A message whose only field is bytes field `number` = `data`: written into
 * `data`'s headroom when it has room (no copy, see `inFront`), else the
 * data copied once behind its tag and length.
 */
export function bytesField(number: number, data: Uint8Array): Buffer {
  const inPlace = inFront(new Uint8Array(0), number, data);
  if (inPlace) return inPlace;
  const tag = (number << 3) | 2;
  const out = Buffer.allocUnsafe(varintSize(tag) + varintSize(data.length) + data.length);
  out.set(data, writeVarint(out, writeVarint(out, 0, tag), data.length));
  return out;
}

/**
 * The message `head` + field `number` = `data`, written into the headroom in
 * front of `data` (src/util/headroom.ts): no copy of the bytes. Undefined
 * when `data` has too little headroom.
 */
function inFront(head: Uint8Array, number: number, data: Uint8Array): Buffer | undefined {
  const tag = (number << 3) | 2;
  const need = head.length + varintSize(tag) + varintSize(data.length);
  if (headroomOf(data) < need) return undefined;
  const start = data.byteOffset - need;
  const out = Buffer.from(data.buffer, start, need + data.length);
  out.set(head, 0);
  writeVarint(out, writeVarint(out, head.length, tag), data.length);
  // What is left in front stays spare: a transport may put its own frame header there.
  return withHeadroom(out, headroomOf(data) - need);
}

function varintSize(n: number): number {
  let size = 1;
  for (let v = n; v >= 0x80; v = Math.floor(v / 128)) size++;
  return size;
}

function writeVarint(out: Buffer, pos: number, n: number): number {
  let p = pos;
  let v = n;
  while (v >= 0x80) {
    out[p++] = (v % 128) | 0x80;
    v = Math.floor(v / 128);
  }
  out[p++] = v;
  return p;
}

function deserializer<D extends DescMessage>(desc: D) {
  return (buf: Buffer): MessageShape<D> => fromBinary(desc, buf);
}
