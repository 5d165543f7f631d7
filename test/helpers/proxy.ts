import { once } from "node:events";
import { createServer, connect as netConnect, type Socket } from "node:net";

/** A TCP proxy between a client and a server, used to cut connections on demand. */
export interface TcpProxy {
  /** Where clients connect: 127.0.0.1:PORT. */
  address: string;
  /** Bytes relayed from the server to clients, over all connections so far. */
  readonly downBytes: number;
  /** Bytes relayed from clients to the server, over all connections so far. */
  readonly upBytes: number;
  /**
   * Cuts every connection each time `upBytes` grows by `n` more bytes (until
   * `close`); returns a function that stops it.
   */
  cutEveryUp(n: number): () => void;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Connections open now (client side not yet closed). */
  readonly open: number;
  /** Times `cutAll` destroyed at least one live connection. */
  readonly cuts: number;
  /** Destroys every proxied socket, both sides. New connections are still accepted. */
  cutAll(): void;
  /**
   * Cuts every connection once, the first time `downBytes` reaches `n`;
   * resolves when that cut happened.
   */
  cutAfter(n: number): Promise<void>;
  /**
   * Loses the next response: the first HTTP/2 HEADERS frame the server sends
   * on a stream after this call (for a unary call: its answer, sent once the
   * server has done the work) is not passed on; every connection is cut
   * instead. Resolves with the stream id once that happened. For cleartext
   * HTTP/2 (h2c) only.
   */
  loseNextResponse(): Promise<number>;
  /** Stops a `loseNextResponse` that has not lost anything yet (its promise stays pending). */
  keepResponses(): void;
  /** Where new connections go from now on (host:port): a server that came back elsewhere. */
  retarget(target: string): void;
  /** Closes the listener and every connection. */
  close(): Promise<void>;
}

/**
 * Starts a proxy on 127.0.0.1:0 that forwards to `target` (host:port).
 * `delayMs`: every chunk and end is passed on that much later, each way
 * (order kept): a long path's round trip.
 */
export async function startProxy(
  target: string,
  opts: { delayMs?: number } = {},
): Promise<TcpProxy> {
  const delayMs = opts.delayMs ?? 0;
  const later = (fn: () => void) => (delayMs > 0 ? void setTimeout(fn, delayMs) : fn());
  const split = (t: string) => {
    const i = t.lastIndexOf(":");
    return { host: t.slice(0, i), port: Number(t.slice(i + 1)) };
  };
  let upstreamAt = split(target);
  const live = new Set<Socket>();
  let downBytes = 0;
  let upBytes = 0;
  let upCut: { every: number; next: number } | undefined;
  let connections = 0;
  let open = 0;
  let cuts = 0;
  let trigger: { at: number; fire: () => void } | undefined;
  let lose: ((streamId: number) => void) | undefined;

  const cutAll = () => {
    if (live.size > 0) cuts++;
    for (const s of live) s.destroy();
    live.clear();
  };

  const server = createServer({ noDelay: true }, (client) => {
    connections++;
    open++;
    client.once("close", () => open--);
    const upstream = netConnect({ ...upstreamAt, noDelay: true });
    live.add(client);
    live.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      live.delete(client);
      live.delete(upstream);
    };
    client.on("error", drop);
    upstream.on("error", drop);
    client.on("close", drop);
    upstream.on("close", drop);
    client.on("data", (chunk: Buffer) => {
      upBytes += chunk.length;
      later(() => {
        if (!upstream.write(chunk)) {
          client.pause();
          upstream.once("drain", () => client.resume());
        }
      });
      if (upCut && upBytes >= upCut.next) {
        upCut.next = upBytes + upCut.every;
        cutAll();
      }
    });
    client.on("end", () => later(() => upstream.end()));
    const frames = new FrameScanner();
    upstream.on("data", (chunk: Buffer) => {
      const headersOn = frames.scan(chunk);
      if (lose && headersOn !== undefined) {
        const fire = lose;
        lose = undefined;
        cutAll();
        fire(headersOn);
        return;
      }
      downBytes += chunk.length;
      later(() => {
        if (!client.write(chunk)) {
          upstream.pause();
          client.once("drain", () => upstream.resume());
        }
      });
      if (trigger && downBytes >= trigger.at) {
        const t = trigger;
        trigger = undefined;
        t.fire();
      }
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const addr = server.address();
  if (!addr || typeof addr === "string") throw new Error("proxy has no address");

  return {
    address: `127.0.0.1:${addr.port}`,
    get downBytes() {
      return downBytes;
    },
    get upBytes() {
      return upBytes;
    },
    cutEveryUp: (n) => {
      upCut = { every: n, next: upBytes + n };
      return () => {
        upCut = undefined;
      };
    },
    get connections() {
      return connections;
    },
    get open() {
      return open;
    },
    get cuts() {
      return cuts;
    },
    cutAll,
    cutAfter: (n) =>
      new Promise<void>((resolve) => {
        trigger = {
          at: n,
          fire: () => {
            cutAll();
            resolve();
          },
        };
      }),
    retarget: (t) => {
      upstreamAt = split(t);
    },
    keepResponses: () => {
      lose = undefined;
    },
    loseNextResponse: () =>
      new Promise<number>((resolve) => {
        lose = resolve;
      }),
    close: async () => {
      trigger = undefined;
      lose = undefined;
      upCut = undefined;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      cutAll();
      await closed;
    },
  };
}

/**
 * Follows the HTTP/2 frames a server sends on one connection (RFC 9113 §4.1:
 * a 9-byte header of length, type, flags and stream id, then the payload),
 * across chunk boundaries.
 */
class FrameScanner {
  /** Bytes of the current frame's header seen so far (at most 9). */
  private head = Buffer.alloc(0);
  /** Payload bytes of the current frame still to skip. */
  private skip = 0;

  /** The stream id of the first HEADERS frame (type 1, stream > 0) that starts in `chunk`, if any. */
  scan(chunk: Buffer): number | undefined {
    let found: number | undefined;
    let i = 0;
    while (i < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - i);
        this.skip -= n;
        i += n;
        continue;
      }
      const need = 9 - this.head.length;
      this.head = Buffer.concat([this.head, chunk.subarray(i, i + need)]);
      i += Math.min(need, chunk.length - i);
      if (this.head.length < 9) break;
      const type = this.head[3];
      const stream = this.head.readUInt32BE(5) & 0x7fffffff;
      this.skip = this.head.readUIntBE(0, 3);
      this.head = Buffer.alloc(0);
      if (found === undefined && type === 1 && stream > 0) found = stream;
    }
    return found;
  }
}
