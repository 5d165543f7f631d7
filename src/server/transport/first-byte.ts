import type { Socket } from "node:net";

/** The first byte of a TLS connection: a handshake record (content type 22). */
export const TLS_HANDSHAKE = 0x16;

/**
 * Waits for the first bytes a client sends, puts them back in front of the
 * socket's read buffer (`unshift`: nothing read here is lost to the next
 * owner), and calls `route` with the first byte, synchronously, before any
 * further byte is read. A socket that fails, ends or sends nothing within
 * `timeoutMs` is destroyed without calling `route`.
 */
export function routeByFirstByte(
  socket: Socket,
  timeoutMs: number,
  route: (firstByte: number) => void,
): void {
  const done = () => {
    socket.setTimeout(0);
    socket.off("timeout", drop);
    socket.off("error", drop);
    socket.off("end", drop);
    socket.off("data", onData);
  };
  const drop = () => {
    done();
    socket.destroy();
  };
  const onData = (chunk: Buffer) => {
    done();
    socket.pause();
    socket.unshift(chunk);
    route(chunk[0] ?? 0);
  };
  socket.setTimeout(timeoutMs);
  socket.once("timeout", drop);
  socket.once("error", drop);
  socket.once("end", drop);
  socket.on("data", onData);
}
