import { once } from "node:events";
import { createServer, connect as netConnect, type Socket } from "node:net";

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
 * keeps a copy of what each client sent: what went over the wire, seen from
 * outside both ends.
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

export async function startTap(
  host: string,
  target: string,
  capBytes = 64 * 1024 * 1024,
): Promise<Tap> {
  const i = target.lastIndexOf(":");
  const targetHost = target.slice(0, i);
  const targetPort = Number(target.slice(i + 1));
  const connections: TappedConnection[] = [];
  const live = new Set<Socket>();
  let kept = 0;
  const server = createServer({ noDelay: true }, (client) => {
    const conn: TappedConnection = { up: [], upBytes: 0, down: [], downBytes: 0 };
    connections.push(conn);
    const upstream = netConnect({ host: targetHost, port: targetPort, noDelay: true });
    live.add(client);
    live.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      live.delete(client);
      live.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on("error", drop);
      s.on("close", drop);
    }
    client.on("data", (chunk: Buffer) => {
      conn.upBytes += chunk.length;
      if (kept + chunk.length <= capBytes) {
        conn.up.push(chunk);
        kept += chunk.length;
      }
      if (!upstream.write(chunk)) {
        client.pause();
        upstream.once("drain", () => client.resume());
      }
    });
    upstream.on("data", (chunk: Buffer) => {
      conn.downBytes += chunk.length;
      if (kept + chunk.length <= capBytes) {
        conn.down.push(chunk);
        kept += chunk.length;
      }
      if (!client.write(chunk)) {
        upstream.pause();
        client.once("drain", () => upstream.resume());
      }
    });
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
  });
  server.listen(0, host);
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  return {
    address: `${host}:${port}`,
    connections,
    close: async () => {
      for (const s of live) s.destroy();
      live.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
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
