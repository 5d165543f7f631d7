import { constants } from "node:fs";
import { type FileHandle, open, statfs } from "node:fs/promises";
import { addonPath, loadAddon } from "./addon.ts";

/** O_DIRECT's alignment of memory, offsets and lengths (the largest logical block size in use). */
const ALIGN = 4096;
/** Bytes per direct write; each writer holds two such buffers. */
export const DIRECT_STEP = 4 * 1024 * 1024;

/**
 * Filesystems written around the page cache (statfs f_type): local ones where a direct write
 * is a DMA from our buffer. Not tmpfs (its pages are the file), nor network or FUSE
 * filesystems (a direct write may be a synchronous round trip each).
 */
const LOCAL_DISK = new Set([0xef53 /* ext2/3/4 */, 0x58465342 /* xfs */, 0x9123683e /* btrfs */]);

/** Errors by which a filesystem refuses a direct write: the rest goes through the page cache. */
const REFUSED = new Set(["EINVAL", "EOPNOTSUPP", "ENOTSUP"]);

const ADDON = addonPath("aligned");

/** `length` bytes of memory starting on an ALIGN boundary. */
export type AlignedAllocator = (length: number) => Uint8Array;

const loaded = new Map<string, AlignedAllocator | undefined>();

/** native/aligned-buffer.c's `aligned`, or undefined when the addon is missing or unusable. */
function alignedAllocator(addon: string): AlignedAllocator | undefined {
  if (!loaded.has(addon)) {
    const a = loadAddon<{ aligned: (length: number) => ArrayBuffer }>(addon);
    loaded.set(addon, "why" in a ? undefined : (n) => new Uint8Array(a.exports.aligned(n)));
  }
  return loaded.get(addon);
}

/** Idle buffers of the addon's, kept for the next writer: memory already touched is cheap to use again. */
const idle: Uint8Array[] = [];
const IDLE_MAX = 4;

export interface DirectFileOptions {
  /** The addon's path (tests). */
  addon?: string;
  /** Where the buffers come from instead of the addon (tests); they are not pooled. */
  allocate?: AlignedAllocator;
}

/**
 * Writes a new file from its first byte on around the page cache: bytes are
 * gathered into two page-aligned buffers of DIRECT_STEP bytes and written
 * with O_DIRECT by a second descriptor of the same file, one buffer filling
 * while the other is written; the last partial block goes through the
 * caller's own (buffered) descriptor. Why: on this VM a new file's pages come
 * from memory the host took back and cost 0.6-0.75 s per 256 MiB to fill,
 * O_DIRECT 0.17-0.2 s (docs/DECISIONS.md, "Downloads written around the page
 * cache"). The file's bytes are the same either way; only what the page cache
 * holds afterwards differs. When the filesystem refuses a direct write
 * (EINVAL, EOPNOTSUPP), that buffer and every later one go through the
 * buffered descriptor (the other buffer's write, already under way, may still
 * go direct).
 *
 * Contract: `write` calls are sequential (each awaited) and their bytes land
 * at consecutive offsets from 0; `end` writes the rest and resolves to the
 * count. Either may reject with the error of any earlier write. After `end`
 * or `abort` the writer is done: another `write` or `end` throws. After a
 * failure, `abort` waits for the writes under way and releases the buffers
 * and the second descriptor (the caller removes the file). The caller's
 * descriptor stays the caller's to close.
 */
export class DirectFileWriter {
  private readonly writing: [Promise<void> | undefined, Promise<void> | undefined] = [
    undefined,
    undefined,
  ];
  private cur: 0 | 1 = 0;
  private fill = 0;
  /** Offset of the current buffer's first byte in the file. */
  private at = 0;
  private direct = true;
  private closed = false;

  private constructor(
    private readonly file: FileHandle,
    private readonly directFile: FileHandle,
    private readonly bufs: [Uint8Array, Uint8Array],
    private readonly pooled: boolean,
  ) {}

  /**
   * A writer for the file open (for writing) at `file`, new and with nothing
   * written yet (its blocks may be allocated), or undefined when direct writes
   * are out of reach or not worth it here: the addon is not built, /proc is
   * not mounted, the file is not on a local disk filesystem (ext2/3/4, xfs,
   * btrfs), or the filesystem refuses O_DIRECT.
   */
  static async open(
    file: FileHandle,
    opts: DirectFileOptions = {},
  ): Promise<DirectFileWriter | undefined> {
    const allocate = opts.allocate ?? alignedAllocator(opts.addon ?? ADDON);
    if (!allocate) return undefined;
    const proc = `/proc/self/fd/${file.fd}`;
    let directFile: FileHandle;
    try {
      if (!LOCAL_DISK.has((await statfs(proc)).type)) return undefined;
      directFile = await open(proc, constants.O_WRONLY | constants.O_DIRECT);
    } catch {
      return undefined;
    }
    const pooled = opts.allocate === undefined;
    const taken: Uint8Array[] = [];
    try {
      for (let i = 0; i < 2; i++) taken.push((pooled && idle.pop()) || allocate(DIRECT_STEP));
      return new DirectFileWriter(file, directFile, taken as [Uint8Array, Uint8Array], pooled);
    } catch {
      if (pooled) idle.push(...taken.slice(0, IDLE_MAX - idle.length));
      await directFile.close().catch(() => {});
      return undefined;
    }
  }

  /**
   * Copies `chunk` in; resolves once its bytes are in a buffer (when that
   * filled one, after the other buffer's earlier write completed).
   */
  async write(chunk: Uint8Array): Promise<void> {
    this.check();
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
        await this.writing[this.cur]; // the other buffer's bytes are out before it refills
      }
    }
  }

  /** Writes what remains and releases the buffers; resolves to the bytes written in all. */
  async end(): Promise<number> {
    this.check();
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

  private check(): void {
    // Its buffers may belong to another writer by now.
    if (this.closed) throw new Error("DirectFileWriter used after end() or abort()");
  }

  /** `len` bytes of `buf` at `pos`: direct while the filesystem takes it, else buffered. */
  private async put(buf: Uint8Array, len: number, pos: number): Promise<void> {
    if (this.direct) {
      try {
        await writeAll(this.directFile, buf.subarray(0, len), pos);
        return;
      } catch (err) {
        if (!REFUSED.has((err as NodeJS.ErrnoException).code ?? "")) throw err;
        this.direct = false; // refused here: this buffer (again, whole) and the rest buffered
      }
    }
    await writeAll(this.file, buf.subarray(0, len), pos);
  }

  private async release(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.pooled) for (const b of this.bufs) if (idle.length < IDLE_MAX) idle.push(b);
    await this.directFile.close();
  }
}

/** All of `data` at `pos` of `file`, in as many writes as it takes; a write of 0 bytes is an error. */
async function writeAll(file: FileHandle, data: Uint8Array, pos: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await file.write(data, done, data.length - done, pos + done);
    if (bytesWritten === 0) throw Object.assign(new Error("write wrote nothing"), { code: "EIO" });
    done += bytesWritten;
  }
}
