import { once } from "node:events";
import { createServer, connect as netConnect, type Socket } from "node:net";
import { FRAME, FrameWatcher } from "./h2-frames.ts";

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

/** Sees the bytes of one proxied connection as they go by (before any delay). */
export interface ConnectionObserver {
  /** A chunk the client sent. */
  up(chunk: Buffer): void;
  /** A chunk the server sent that is passed on. */
  down(chunk: Buffer): void;
}

/**
 * Starts a proxy on `host`:0 (127.0.0.1 by default) that forwards to `target`
 * (host:port). `delayMs`: every chunk and end is passed on that much later,
 * each way (order kept): a long path's round trip. `observe`: called for each
 * new connection; what it returns sees that connection's bytes.
 */
export async function startProxy(
  target: string,
  opts: { delayMs?: number; host?: string; observe?: () => ConnectionObserver } = {},
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
    const seen = opts.observe?.();
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
      seen?.up(chunk);
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
    // The server's frames: where a response's HEADERS begin (a server sends no preface).
    let headersOn: number | undefined;
    const frames = new FrameWatcher(0, (type, _flags, stream) => {
      if (type === FRAME.HEADERS && stream > 0) headersOn ??= stream;
    });
    upstream.on("data", (chunk: Buffer) => {
      headersOn = undefined;
      frames.push(chunk);
      if (lose && headersOn !== undefined) {
        const fire = lose;
        lose = undefined;
        cutAll();
        fire(headersOn);
        return;
      }
      downBytes += chunk.length;
      seen?.down(chunk);
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
  const host = opts.host ?? "127.0.0.1";
  server.listen(0, host);
  await once(server, "listening");
  const addr = server.address();
  if (!addr || typeof addr === "string") throw new Error("proxy has no address");

  return {
    address: `${host}:${addr.port}`,
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
