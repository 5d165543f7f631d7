/**
 * HTTP/2 frames seen from outside a connection (RFC 9113 §4.1: each frame a
 * 9-byte header of length, type, flags and stream id, then its payload), for
 * the test proxies that watch them go by.
 */

/** Frame types (RFC 9113 §6). */
export const FRAME = { HEADERS: 0x1, PING: 0x6, GOAWAY: 0x7 } as const;
/** The ACK flag of PING and SETTINGS frames. */
export const FLAG_ACK = 0x1;
/** The length of the client's connection preface, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n". */
export const H2_PREFACE_BYTES = 24;

/** Follows HTTP/2 frame boundaries in one direction, skipping payloads. */
export class FrameWatcher {
  private skip: number;
  private head = Buffer.alloc(0);

  constructor(
    preface: number,
    private readonly onFrame: (type: number, flags: number, stream: number) => void,
  ) {
    this.skip = preface;
  }

  push(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - i);
        this.skip -= n;
        i += n;
        continue;
      }
      const take = chunk.subarray(i, i + 9 - this.head.length);
      this.head = Buffer.concat([this.head, take]);
      i += take.length;
      if (this.head.length === 9) {
        this.onFrame(
          this.head[3] as number,
          this.head[4] as number,
          this.head.readUInt32BE(5) & 0x7fffffff,
        );
        this.skip = this.head.readUIntBE(0, 3);
        this.head = Buffer.alloc(0);
      }
    }
  }
}
