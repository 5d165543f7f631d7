import * as fs from "node:fs";
import { promisify } from "node:util";

/**
 * Plain-fd file I/O for the hot paths (snapshots read and store every file
 * once): callback fs calls made into promises, without FileHandle objects,
 * and read buffers that are reused instead of allocated per read.
 */
export const openFd = promisify(fs.open) as (
  path: fs.PathLike,
  flags: number | string,
  mode?: number,
) => Promise<number>;
export const closeFd = promisify(fs.close);

export function readFd(fd: number, buf: Buffer, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.read(fd, buf, 0, len, pos, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

/** Writes all of `buf[0, len)` at the fd's current position. */
export async function writeAll(fd: number, buf: Buffer, len: number): Promise<void> {
  let off = 0;
  while (off < len) {
    off += await new Promise<number>((resolve, reject) => {
      fs.write(fd, buf, off, len - off, null, (err, n) => (err ? reject(err) : resolve(n)));
    });
  }
}

export const BUFFER_SIZE = 1024 * 1024;
const free: Buffer[] = [];

/** Borrows a 1 MiB buffer; give it back with `releaseBuffer` once no I/O uses it. */
export function takeBuffer(): Buffer {
  return free.pop() ?? Buffer.allocUnsafeSlow(BUFFER_SIZE);
}

export function releaseBuffer(buf: Buffer): void {
  if (free.length < 32) free.push(buf);
}
