import { startProxy } from "./proxy.ts";

/** One connection through a tap: the bytes its client sent, and those the server sent back. */
export interface TappedConnection {
  /** Every byte the client sent (up to the tap's cap). */
  up: Buffer[];
  upBytes: number;
  /** Every byte the server sent (up to the tap's cap). */
  down: Buffer[];
  downBytes: number;
}

/**
 * A TCP relay on `host`:0 to `target` that passes every byte on unchanged and
 * keeps a copy of what went over each connection, both ways: the wire, seen
 * from outside both ends.
 */
export interface Tap {
  /** host:PORT */
  address: string;
  connections: TappedConnection[];
  close(): Promise<void>;
}

/** The start of every cleartext HTTP/2 connection (RFC 9113 §3.4). */
export const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** A TLS record's first byte when it carries a handshake message (ClientHello, ServerHello). */
export const TLS_HANDSHAKE_RECORD = 0x16;

/**
 * Starts a tap: a proxy (./proxy.ts) on `host`:0 to `target` that keeps what
 * goes over each connection, both ways, up to `capBytes` in all.
 */
export async function startTap(
  host: string,
  target: string,
  capBytes = 64 * 1024 * 1024,
): Promise<Tap> {
  const connections: TappedConnection[] = [];
  let kept = 0;
  const keep = (into: Buffer[], chunk: Buffer) => {
    if (kept + chunk.length > capBytes) return;
    into.push(chunk);
    kept += chunk.length;
  };
  const proxy = await startProxy(target, {
    host,
    observe: () => {
      const conn: TappedConnection = { up: [], upBytes: 0, down: [], downBytes: 0 };
      connections.push(conn);
      return {
        up: (chunk) => {
          conn.upBytes += chunk.length;
          keep(conn.up, chunk);
        },
        down: (chunk) => {
          conn.downBytes += chunk.length;
          keep(conn.down, chunk);
        },
      };
    },
  });
  return { address: proxy.address, connections, close: () => proxy.close() };
}

/**
 * Whether `needle` is anywhere in what went over `conn`, either way (across chunk borders
 * too).
 */
export function sentOn(conn: TappedConnection, needle: Buffer): boolean {
  return Buffer.concat(conn.up).includes(needle) || Buffer.concat(conn.down).includes(needle);
}

/** A TLS record carrying a handshake message: content type 22, then the record's version 3.x. */
function handshakeRecord(b: Buffer): boolean {
  return b[0] === TLS_HANDSHAKE_RECORD && b[1] === 3;
}

/**
 * How the client began a connection: "tls" (a TLS handshake record: its
 * ClientHello), "h2c" (the cleartext HTTP/2 preface), "nothing" (it sent no
 * byte), or "other".
 */
export function howItBegan(conn: TappedConnection): "tls" | "h2c" | "nothing" | "other" {
  const up = Buffer.concat(conn.up.slice(0, 4));
  if (conn.upBytes === 0) return "nothing";
  if (up.subarray(0, H2_PREFACE.length).equals(H2_PREFACE)) return "h2c";
  return handshakeRecord(up) ? "tls" : "other";
}

/** Whether the server's first bytes on `conn` were a TLS handshake record (its ServerHello). */
export function serverAnsweredTls(conn: TappedConnection): boolean {
  return handshakeRecord(Buffer.concat(conn.down.slice(0, 4)));
}
