import { FLAG_ACK, FRAME, FrameWatcher, H2_PREFACE_BYTES } from "./h2-frames.ts";
import { startProxy } from "./proxy.ts";

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

/**
 * Starts an H2Proxy to `target` (host:port): the cutting proxy of ./proxy.ts,
 * with the frames of each connection watched both ways.
 */
export async function startH2Proxy(target: string): Promise<H2Proxy> {
  const counts = { clientPings: 0, serverPingAcks: 0, serverGoaways: 0 };
  const proxy = await startProxy(target, {
    observe: () => {
      const up = new FrameWatcher(H2_PREFACE_BYTES, (type, flags) => {
        if (type === FRAME.PING && !(flags & FLAG_ACK)) counts.clientPings++;
      });
      const down = new FrameWatcher(0, (type, flags) => {
        if (type === FRAME.PING && flags & FLAG_ACK) counts.serverPingAcks++;
        if (type === FRAME.GOAWAY) counts.serverGoaways++;
      });
      return { up: (c) => up.push(c), down: (c) => down.push(c) };
    },
  });
  return {
    address: proxy.address,
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
      return proxy.downBytes;
    },
    cut: () => proxy.cutAll(),
    close: () => proxy.close(),
  };
}
