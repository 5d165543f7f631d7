/**
 * Raw gRPC-over-HTTP/2 calls for edge tests: hand-made message frames
 * (compressed or not, any bytes), any request headers, and a proxy that
 * replaces a client's request headers with a hand-encoded block (for header
 * lists no HTTP/2 library sends, e.g. two `authorization` headers).
 */
import { once } from "node:events";
import { connect as h2connect } from "node:http2";
import { connect, createServer, type Socket } from "node:net";

/** One gRPC length-prefixed message: flag byte, 4-byte length, bytes. */
export function grpcFrame(msg: Uint8Array, compressed = false): Buffer {
  const head = Buffer.alloc(5);
  head[0] = compressed ? 1 : 0;
  head.writeUInt32BE(msg.length, 1);
  return Buffer.concat([head, msg]);
}

export interface RawResult {
  /** grpc-status of the trailers (or of a trailers-only answer); undefined: none came. */
  code: number | undefined;
  message: string;
}

/**
 * Calls `path` on `address` with `headers` (content-type and te are added)
 * and sends `body` (already framed), then ends the request. Resolves with
 * the gRPC status the router answered.
 */
export async function rawCall(
  address: string,
  path: string,
  headers: Record<string, string>,
  body: Buffer,
): Promise<RawResult> {
  const session = h2connect(`http://${address}`);
  session.on("error", () => {});
  try {
    const req = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      ...headers,
    });
    req.on("error", () => {});
    let code: number | undefined;
    let message = "";
    const take = (h: Record<string, unknown>) => {
      if (h["grpc-status"] !== undefined) code = Number(h["grpc-status"]);
      if (typeof h["grpc-message"] === "string") message = decodeURI(h["grpc-message"]);
    };
    req.on("response", take);
    req.on("trailers", take);
    req.resume();
    req.end(body);
    await once(req, "close");
    return { code, message };
  } finally {
    session.destroy();
  }
}

/** An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1); `first` holds the prefix's flags. */
function hpackInt(value: number, n: number, first: number): number[] {
  const max = (1 << n) - 1;
  if (value < max) return [first | value];
  const out = [first | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

/** A header block of literal fields without indexing, new names, no Huffman coding. */
export function headerBlock(fields: [string, string][]): Buffer {
  const bytes: number[] = [];
  for (const [name, value] of fields) {
    bytes.push(0x00);
    for (const s of [name, value]) {
      const b = Buffer.from(s);
      bytes.push(...hpackInt(b.length, 7, 0), ...b);
    }
  }
  return Buffer.from(bytes);
}

const PREFACE = 24;
const HEADERS = 0x1;
const PADDED = 0x8;
const PRIORITY = 0x20;

/**
 * A TCP proxy to `target` that replaces the header block of the first
 * HEADERS frame a client sends on each connection with `block` (which must
 * hold the whole request's headers); everything else passes unchanged. Use
 * one request per connection: the client's HPACK table no longer matches
 * the router's after the swap.
 */
export async function startHeaderSwapProxy(
  target: string,
  block: Buffer,
): Promise<{ address: string; close: () => Promise<void> }> {
  const [host, port] = [
    target.slice(0, target.lastIndexOf(":")),
    target.slice(target.lastIndexOf(":") + 1),
  ];
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(Number(port), host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    upstream.pipe(client);
    let pending = Buffer.alloc(0);
    let swapped = false;
    let prefaceLeft = PREFACE;
    client.on("data", (chunk: Buffer) => {
      if (swapped) {
        upstream.write(chunk);
        return;
      }
      pending = Buffer.concat([pending, chunk]);
      // Forward whole frames until the first HEADERS frame, which is rewritten.
      while (!swapped) {
        if (prefaceLeft > 0) {
          if (pending.length < prefaceLeft) return;
          upstream.write(pending.subarray(0, prefaceLeft));
          pending = pending.subarray(prefaceLeft);
          prefaceLeft = 0;
        }
        if (pending.length < 9) return;
        const len = pending.readUIntBE(0, 3);
        if (pending.length < 9 + len) return;
        const type = pending[3] as number;
        const flags = pending[4] as number;
        if (type === HEADERS) {
          if (flags & (PADDED | PRIORITY)) throw new Error("padded/priority HEADERS not handled");
          const head = Buffer.alloc(9);
          head.writeUIntBE(block.length, 0, 3);
          head[3] = HEADERS;
          head[4] = flags;
          pending.copy(head, 5, 5, 9);
          upstream.write(Buffer.concat([head, block]));
          swapped = true;
        } else upstream.write(pending.subarray(0, 9 + len));
        pending = pending.subarray(9 + len);
      }
      if (pending.length > 0) upstream.write(pending);
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const a = server.address() as { port: number };
  return {
    address: `127.0.0.1:${a.port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, "close").catch(() => undefined);
    },
  };
}
