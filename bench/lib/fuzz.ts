/**
 * A request fuzzer for the router's edge (issue 15): malformed request bodies
 * (random bytes, invalid UTF-8 in string fields, wire-type mismatches,
 * truncated fields, oversized varints, flipped bytes) sent to every method of
 * every service, with and without a token, through a raw grpc-js client with
 * identity (de)serializers (Buffer in, Buffer out), some gzip-compressed. It
 * counts the status codes; INTERNAL or UNKNOWN is a finding.
 * Used by test/fuzz.test.ts (a few thousand calls) and bench/fuzz.ts (`npm run fuzz`).
 */
import { type DescMessage, type DescService, ScalarType } from "@bufbuild/protobuf";
import { Client, type ClientReadableStream, credentials, Metadata, status } from "@grpc/grpc-js";
import { TaskCommandRouter } from "../../src/gen/modal_proto/task_command_router_pb.ts";
import { Execs } from "../../src/gen/taskrouter/v1/execs_pb.ts";
import { Images } from "../../src/gen/taskrouter/v1/images_pb.ts";
import { Secrets } from "../../src/gen/taskrouter/v1/secrets_pb.ts";
import { Tasks } from "../../src/gen/taskrouter/v1/tasks_pb.ts";
import { Volumes } from "../../src/gen/taskrouter/v1/volumes_pb.ts";

export interface FuzzMethod {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  /** Field numbers and wire types of the request message (for targeted mutations). */
  fields: { no: number; wire: number; string: boolean }[];
  /** A valid encoding of the request with every field set. */
  template: Buffer;
}

export interface FuzzOptions {
  address: string;
  /** The `authorization` tokens to rotate through; undefined: none sent. */
  tokens: (string | undefined)[];
  count: number;
  seed: number;
  /** Calls in flight at once. */
  concurrency?: number;
  deadlineMs?: number;
  /** Called every 1,000 calls. */
  onProgress?: (done: number) => void;
}

export interface FuzzFinding {
  path: string;
  code: number;
  details: string;
  token: boolean;
  bodies: string[];
}

export interface FuzzReport {
  calls: number;
  /** Calls by status code (0: OK). */
  codes: Map<number, number>;
  /** INTERNAL and UNKNOWN answers (at most 50 kept). */
  findings: FuzzFinding[];
  internalOrUnknown: number;
}

/** Wire types of protobuf scalar types. */
function wireOf(t: ScalarType): number {
  switch (t) {
    case ScalarType.STRING:
    case ScalarType.BYTES:
      return 2;
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return 1;
    case ScalarType.FLOAT:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      return 5;
    default:
      return 0;
  }
}

function varint(n: number): number[] {
  const out: number[] = [];
  let v = n;
  while (v >= 0x80) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

const tag = (no: number, wire: number) => varint(no * 8 + wire);

/** A field's value in wire type `wire`: "fuzz" for length-delimited, 1 for the others. */
function value(wire: number): number[] {
  if (wire === 2) return [4, 0x66, 0x75, 0x7a, 0x7a];
  if (wire === 1) return [1, 0, 0, 0, 0, 0, 0, 0];
  if (wire === 5) return [1, 0, 0, 0];
  return [1];
}

function methodOf(path: string, input: DescMessage | undefined, kind: string): FuzzMethod {
  const fields = (input?.fields ?? []).map((f) => ({
    no: f.number,
    wire:
      f.fieldKind === "scalar" || (f.fieldKind === "list" && f.listKind === "scalar")
        ? wireOf(f.scalar as ScalarType)
        : f.fieldKind === "enum" || (f.fieldKind === "list" && f.listKind === "enum")
          ? 0
          : 2,
    string: (f.fieldKind === "scalar" || f.fieldKind === "list") && f.scalar === ScalarType.STRING,
  }));
  const bytes: number[] = [];
  for (const f of fields)
    bytes.push(...tag(f.no, f.wire), ...(f.wire === 2 && !f.string ? [0] : value(f.wire)));
  return {
    path,
    requestStream: kind === "client_streaming" || kind === "bidi_streaming",
    responseStream: kind === "server_streaming" || kind === "bidi_streaming",
    fields: fields.length > 0 ? fields : [{ no: 1, wire: 2, string: true }],
    template: Buffer.from(bytes),
  };
}

/** Every method of every service the router serves (Health's three included). */
export function fuzzMethods(): FuzzMethod[] {
  const services: DescService[] = [TaskCommandRouter, Tasks, Execs, Images, Secrets, Volumes];
  const out = services.flatMap((s) =>
    s.methods.map((m) => methodOf(`/${s.typeName}/${m.name}`, m.input, m.methodKind)),
  );
  const health = { fields: [{ no: 1, wire: 2, string: true }], template: Buffer.from([0x0a, 0]) };
  for (const [name, responseStream] of [
    ["Check", false],
    ["Watch", true],
    ["List", false],
  ] as const) {
    out.push({
      path: `/grpc.health.v1.Health/${name}`,
      requestStream: false,
      responseStream,
      ...health,
    });
  }
  return out;
}

/** mulberry32: a small seeded PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One malformed (or, by chance, valid) request body for `m`. */
export function mutate(m: FuzzMethod, rand: () => number): Buffer {
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rand() * a.length)] as T;
  const f = pick(m.fields);
  const bytes = (n: number) => Array.from({ length: n }, () => Math.floor(rand() * 256));
  switch (Math.floor(rand() * 7)) {
    case 0: // random bytes
      return Buffer.from(bytes(Math.floor(rand() * 48)));
    case 1: {
      // invalid UTF-8 in a (string) field
      const bad = pick([
        [0xff],
        [0xc0, 0x80],
        [0xed, 0xa0, 0x80],
        [0xe2, 0x82],
        [0xf8, 0x88, 0x80, 0x80, 0x80],
      ]);
      const s = m.fields.find((x) => x.string) ?? f;
      return Buffer.from([...tag(s.no, 2), bad.length + 1, 0x61, ...bad]);
    }
    case 2: {
      // wire-type mismatch: a field in a wire type that is not its own
      const wire = pick([0, 1, 2, 5].filter((w) => w !== f.wire));
      return Buffer.concat([m.template, Buffer.from([...tag(f.no, wire), ...value(wire)])]);
    }
    case 3: {
      // truncated: the template cut short, or a length longer than what follows
      if (rand() < 0.5 && m.template.length > 1) {
        return m.template.subarray(0, 1 + Math.floor(rand() * (m.template.length - 1)));
      }
      return Buffer.from([...tag(f.no, 2), ...varint(10 + Math.floor(rand() * 1e6)), 0x61]);
    }
    case 4: // an oversized varint (11+ bytes), as a value or as a tag
      return rand() < 0.5
        ? Buffer.from([...tag(f.no, 0), ...Array(10 + Math.floor(rand() * 4)).fill(0xff), 0x01])
        : Buffer.from([...Array(11).fill(0x80), 0x01]);
    case 5: {
      // flipped bytes in a valid request
      const b = Buffer.from(m.template);
      for (let i = 0; i < 1 + Math.floor(rand() * 3) && b.length > 0; i++) {
        b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256);
      }
      return b;
    }
    default: // group wire types (3, 4) and the reserved 6, 7
      return Buffer.from([...tag(f.no, pick([3, 4, 6, 7])), ...bytes(Math.floor(rand() * 4))]);
  }
}

const raw = (b: Buffer) => b;

/** One call; resolves with its status code and details. */
function call(
  client: Client,
  m: FuzzMethod,
  bodies: Buffer[],
  md: Metadata,
  deadlineMs: number,
): Promise<{ code: number; details: string }> {
  const deadline = Date.now() + deadlineMs;
  return new Promise((resolve) => {
    const done = (err: { code?: number; details?: string } | null) =>
      resolve({ code: err?.code ?? status.OK, details: err?.details ?? "" });
    if (m.requestStream) {
      const c = client.makeClientStreamRequest(m.path, raw, raw, md, { deadline }, done);
      for (const b of bodies) c.write(b);
      c.end();
      return;
    }
    if (!m.responseStream) {
      client.makeUnaryRequest(m.path, raw, raw, bodies[0] as Buffer, md, { deadline }, done);
      return;
    }
    // A stream that sends a message answered the request: stop it there.
    const s: ClientReadableStream<Buffer> = client.makeServerStreamRequest(
      m.path,
      raw,
      raw,
      bodies[0] as Buffer,
      md,
      { deadline },
    );
    let settled = false;
    s.on("data", () => {
      if (settled) return;
      settled = true;
      resolve({ code: status.OK, details: "" });
      s.cancel();
    });
    s.on("error", (e: { code?: number; details?: string }) => {
      if (!settled) done(e);
      settled = true;
    });
    s.on("status", (st: { code: number; details: string }) => {
      if (!settled) done(st.code === status.OK ? null : st);
      settled = true;
    });
  });
}

/** Sends `opts.count` fuzzed calls and reports their status codes. */
export async function runFuzz(opts: FuzzOptions): Promise<FuzzReport> {
  const rand = prng(opts.seed);
  const methods = fuzzMethods();
  const plain = new Client(opts.address, credentials.createInsecure());
  const gzip = new Client(opts.address, credentials.createInsecure(), {
    "grpc.default_compression_algorithm": 2,
  });
  const report: FuzzReport = { calls: 0, codes: new Map(), findings: [], internalOrUnknown: 0 };
  let next = 0;
  const worker = async () => {
    while (next < opts.count) {
      next++;
      const m = methods[Math.floor(rand() * methods.length)] as FuzzMethod;
      const token = opts.tokens[Math.floor(rand() * opts.tokens.length)];
      const md = new Metadata();
      if (token !== undefined) md.set("authorization", `Bearer ${token}`);
      const n = m.requestStream ? 1 + Math.floor(rand() * 3) : 1;
      // Client streams: a valid first message now and then, so later ones are read.
      const bodies = Array.from({ length: n }, (_, i) =>
        i === 0 && n > 1 && rand() < 0.5 ? m.template : mutate(m, rand),
      );
      const client = rand() < 0.1 ? gzip : plain;
      const res = await call(client, m, bodies, md, opts.deadlineMs ?? 10_000);
      report.calls++;
      report.codes.set(res.code, (report.codes.get(res.code) ?? 0) + 1);
      if (res.code === status.INTERNAL || res.code === status.UNKNOWN) {
        report.internalOrUnknown++;
        if (report.findings.length < 50) {
          report.findings.push({
            path: m.path,
            code: res.code,
            details: res.details,
            token: token !== undefined,
            bodies: bodies.map((b) => b.toString("hex")),
          });
        }
      }
      if (report.calls % 1000 === 0) opts.onProgress?.(report.calls);
    }
  };
  try {
    await Promise.all(Array.from({ length: opts.concurrency ?? 32 }, worker));
  } finally {
    plain.close();
    gzip.close();
  }
  return report;
}

/** "OK 120, INVALID_ARGUMENT 3000, ..." */
export function describeCodes(codes: Map<number, number>): string {
  return [...codes.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([c, n]) => `${status[c] ?? c} ${n}`)
    .join(", ");
}
