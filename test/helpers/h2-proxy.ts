import { connect, createServer, type Socket } from "node:net";
import { FrameWatcher } from "./h2-frames.ts";

/**
 * A TCP proxy in front of the router that watches the HTTP/2 frames going by
 * (without changing them) and can cut every connection, so tests can see
 * keepalive pings, GOAWAYs, and what a client does when its connection drops.
 */
export interface H2Proxy {
  /** host:port to dial instead of the router. */
  address: string;
  /** PING frames (not ACKs) the clients sent. */
  readonly clientPings: number;
  /** PING ACK frames the router sent. */
  readonly serverPingAcks: number;
  /** GOAWAY frames the router sent. */
  readonly serverGoaways: number;
  /** Bytes relayed from the router to the clients. */
  readonly serverBytes: number;
  /** Destroys every open connection (both sides), as a dropped network would. */
  cut(): void;
  close(): Promise<void>;
}

const PREFACE = 24; // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
const PING = 0x6;
const GOAWAY = 0x7;
const ACK = 0x1;

export async function startH2Proxy(target: string): Promise<H2Proxy> {
  const i = target.lastIndexOf(":");
  const host = target.slice(0, i);
  const port = Number(target.slice(i + 1));
  const sockets = new Set<Socket>();
  const counts = { clientPings: 0, serverPingAcks: 0, serverGoaways: 0, serverBytes: 0 };
  const track = (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => {});
  };
  const server = createServer({ noDelay: true }, (client) => {
    const upstream = connect({ host, port, noDelay: true });
    track(client);
    track(upstream);
    const up = new FrameWatcher(PREFACE, (type, flags) => {
      if (type === PING && !(flags & ACK)) counts.clientPings++;
    });
    const down = new FrameWatcher(0, (type, flags) => {
      if (type === PING && flags & ACK) counts.serverPingAcks++;
      if (type === GOAWAY) counts.serverGoaways++;
    });
    client.on("data", (c: Buffer) => up.push(c));
    upstream.on("data", (c: Buffer) => {
      counts.serverBytes += c.length;
      down.push(c);
    });
    client.pipe(upstream);
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const a = server.address();
  if (!a || typeof a === "string") throw new Error("proxy has no address");
  const cut = () => {
    for (const s of sockets) s.destroy();
  };
  return {
    address: `127.0.0.1:${a.port}`,
    get clientPings() {
      return counts.clientPings;
    },
    get serverPingAcks() {
      return counts.serverPingAcks;
    },
    get serverGoaways() {
      return counts.serverGoaways;
    },
    get serverBytes() {
      return counts.serverBytes;
    },
    cut,
    close: () =>
      new Promise<void>((resolve) => {
        cut();
        server.close(() => resolve());
      }),
  };
}
