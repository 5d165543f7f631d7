import { constants } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { addonPath, loadAddon } from "./addon.ts";

/** O_DIRECT's alignment of memory, offsets and lengths (the largest logical block size in use). */
const ALIGN = 4096;
/** Bytes per direct write; each writer holds two such buffers. */
export const DIRECT_STEP = 4 * 1024 * 1024;

const ADDON = addonPath("aligned");

type Aligned = (length: number) => ArrayBuffer;
const loaded = new Map<string, Aligned | undefined>();

/** native/aligned-buffer.c's `aligned`, or undefined when the addon is missing or unusable. */
function alignedAllocator(addon: string): Aligned | undefined {
  if (!loaded.has(addon)) {
    const a = loadAddon<{ aligned: Aligned }>(addon);
    loaded.set(addon, "why" in a ? undefined : a.exports.aligned);
  }
  return loaded.get(addon);
}

/** Idle aligned buffers, kept for the next writer: memory already touched is cheap to use again. */
const idle: Buffer[] = [];
const IDLE_MAX = 4;

/**
 * Writes a new file from its first byte on around the page cache: bytes are
 * gathered into two page-aligned buffers of DIRECT_STEP bytes and written
 * with O_DIRECT by a second descriptor of the same file, one buffer filling
 * while the other is written; the last partial block goes through the
 * caller's own (buffered) descriptor. Why: on this VM a new file's pages come
 * from memory the host took back and cost 0.6-0.75 s per 256 MiB to fill,
 * O_DIRECT 0.17-0.2 s (docs/DECISIONS.md, "Downloads written around the page
 * cache"). The file's bytes are the same either way; only what the page cache
 * holds afterwards differs. A filesystem that refuses a direct write (EINVAL)
 * gets that buffer and everything after it through the buffered descriptor.
 *
 * Contract: `write` calls are sequential (each awaited) and their bytes land
 * at consecutive offsets from 0; `end` writes the rest and resolves to the
 * count; after either fails, `abort` releases the buffers and the second
 * descriptor (the caller removes the file). The caller's descriptor stays
 * the caller's to close.
 */
export class DirectFileWriter {
  private readonly bufs: [Buffer, Buffer];
  private readonly writing: [Promise<void> | undefined, Promise<void> | undefined] = [
    undefined,
    undefined,
  ];
  private cur: 0 | 1 = 0;
  private fill = 0;
  /** Offset of the current buffer's first byte in the file. */
  private at = 0;
  private direct: boolean;
  private closed = false;

  private constructor(
    private readonly file: FileHandle,
    private readonly directFile: FileHandle,
    bufs: [Buffer, Buffer],
  ) {
    this.bufs = bufs;
    this.direct = true;
  }

  /**
   * A writer for the new, empty file open (for writing) at `file`, or
   * undefined when direct writes are out of reach here: the addon is not
   * built, /proc is not mounted, or the filesystem refuses O_DIRECT.
   * `addon`: the addon's path (tests).
   */
  static async open(file: FileHandle, addon = ADDON): Promise<DirectFileWriter | undefined> {
    const aligned = alignedAllocator(addon);
    if (!aligned) return undefined;
    let directFile: FileHandle;
    try {
      directFile = await open(`/proc/self/fd/${file.fd}`, constants.O_WRONLY | constants.O_DIRECT);
    } catch {
      return undefined;
    }
    try {
      const take = () => idle.pop() ?? Buffer.from(aligned(DIRECT_STEP));
      return new DirectFileWriter(file, directFile, [take(), take()]);
    } catch {
      await directFile.close();
      return undefined;
    }
  }

  /** Copies `chunk` in; resolves once its bytes are in a buffer (a full buffer's write started). */
  async write(chunk: Uint8Array): Promise<void> {
    let off = 0;
    while (off < chunk.length) {
      const buf = this.bufs[this.cur];
      const n = Math.min(DIRECT_STEP - this.fill, chunk.length - off);
      buf.set(chunk.subarray(off, off + n), this.fill);
      this.fill += n;
      off += n;
      if (this.fill === DIRECT_STEP) {
        const i = this.cur;
        const w = this.put(buf, DIRECT_STEP, this.at);
        w.catch(() => {}); // awaited before the buffer refills, by end() or by abort()
        this.writing[i] = w;
        this.at += DIRECT_STEP;
        this.fill = 0;
        this.cur = i === 0 ? 1 : 0;
        await this.writing[this.cur]; // the other buffer's bytes are on their way before it refills
      }
    }
  }

  /** Writes what remains and releases the buffers; resolves to the bytes written in all. */
  async end(): Promise<number> {
    await Promise.all(this.writing);
    const buf = this.bufs[this.cur];
    const whole = this.fill - (this.fill % ALIGN);
    if (whole > 0) await this.put(buf, whole, this.at);
    if (this.fill > whole)
      await writeAll(this.file, buf.subarray(whole, this.fill), this.at + whole);
    const total = this.at + this.fill;
    await this.release();
    return total;
  }

  /** Releases the buffers and the direct descriptor after a failure (waits for writes under way). */
  async abort(): Promise<void> {
    await Promise.allSettled(this.writing);
    await this.release();
  }

  /** `len` bytes of `buf` at `pos`: direct while the filesystem takes it, else buffered. */
  private async put(buf: Buffer, len: number, pos: number): Promise<void> {
    if (this.direct) {
      try {
        await writeAll(this.directFile, buf.subarray(0, len), pos);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EINVAL") throw err;
        this.direct = false; // refused here: this buffer and the rest through the page cache
      }
    }
    await writeAll(this.file, buf.subarray(0, len), pos);
  }

  private async release(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const b of this.bufs) if (idle.length < IDLE_MAX) idle.push(b);
    await this.directFile.close();
  }
}

async function writeAll(file: FileHandle, data: Uint8Array, pos: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await file.write(data, done, data.length - done, pos + done);
    done += bytesWritten;
  }
}
