import type { BigIntStats } from "node:fs";
import { constants } from "node:fs";
import { lstat, readdir, readlink, stat } from "node:fs/promises";
import { FailedPreconditionError, NotFoundError, throwIfAborted } from "../errors.ts";
import type { BlobSink } from "./blob-store.ts";
import { closeFd, openFd } from "./fdio.ts";
import { errCode, Pool } from "./fs-util.ts";
import type { Entry, Manifest, ManifestIndex } from "./manifest.ts";
import { type BinPath, bin, fromBytes, joinRel, show } from "./paths.ts";

/** Progress of a running snapshot: regular files and bytes read so far. */
export interface SnapshotProgress {
  files: number;
  bytes: number;
}

export interface SnapshotOptions {
  signal?: AbortSignal;
  /**
   * The directory is an overlay mount: `upper` is its writable layer and
   * `lower` the tree it was mounted from. Entries absent from `upper` are
   * unchanged since the mount and are taken from `lower` without reading them.
   */
  base?: { upper: string; lower: ManifestIndex } | undefined;
  /** Directories (by device and inode) recorded as empty: their content is not captured. */
  skipDir?: (st: { dev: number; ino: number }) => boolean;
  /** Opens a regular file for reading, resolving with its fd (tests inject failures, count reads). */
  openFile?: (path: Buffer) => Promise<number>;
  onProgress?: (p: SnapshotProgress) => void;
}

const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const defaultOpen = (p: Buffer) => openFd(p, OPEN_FLAGS);

/**
 * Captures the tree at host path `root` into a manifest, storing file
 * contents through `batch` (the caller commits it, then publishes; a sealed
 * image's writer encrypts them).
 *
 * Rules: symlinks are recorded, never followed; sockets and FIFOs are skipped
 * (IPC endpoints are runtime state); overlay whiteouts (char device 0:0) are
 * absences; other device files fail the call (FailedPrecondition); hard links
 * become separate files sharing one blob. Entries that vanish while we walk
 * are left out. An entry we cannot read fails the call with its path.
 */
export async function snapshotTree(
  root: string,
  batch: BlobSink,
  opts: SnapshotOptions = {},
): Promise<Manifest> {
  const w = new Walker(root, batch, opts);
  return w.run();
}

class Walker {
  private readonly entries: (Entry | null)[] = [];
  private readonly reads: Promise<void>[] = [];
  private readonly pool = new Pool(8);
  private readonly rootBuf: Buffer;
  private readonly progress: SnapshotProgress = { files: 0, bytes: 0 };
  private failed: unknown;

  constructor(
    root: string,
    private readonly batch: BlobSink,
    private readonly opts: SnapshotOptions,
  ) {
    this.rootBuf = Buffer.from(root.replace(/\/+$/, ""));
  }

  private abs(base: Buffer, rel: BinPath): Buffer {
    return rel === "" ? base : Buffer.concat([base, Buffer.from("/"), bin(rel)]);
  }

  async run(): Promise<Manifest> {
    // The root is ours to name (often /proc/self/fd/N): follow it; nothing below is followed.
    const st = await stat(this.rootBuf, { bigint: true }).catch((err: unknown) => {
      throw errCode(err) === "ENOENT" ? new NotFoundError("directory not found") : err;
    });
    if (!st.isDirectory()) throw new FailedPreconditionError("path is not a directory");
    try {
      await this.dir("", st, this.opts.base !== undefined);
    } catch (err) {
      this.failed ??= err;
    }
    await Promise.allSettled(this.reads);
    if (this.failed) throw this.failed;
    return { entries: this.entries.filter((e): e is Entry => e !== null) };
  }

  private push(rel: BinPath, st: BigIntStats, extra: Partial<Entry> = {}): number {
    this.entries.push({
      path: rel,
      type: st.isDirectory() ? "dir" : st.isSymbolicLink() ? "symlink" : "file",
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtimeNs: roundToMicros(st.mtimeNs),
      size: 0,
      ...extra,
    });
    return this.entries.length - 1;
  }

  /** Walks directory `rel`; `layered`: it exists in the upper layer of `opts.base`. */
  private async dir(rel: BinPath, st: BigIntStats, layered: boolean): Promise<void> {
    throwIfAborted(this.opts.signal);
    if (this.failed) return;
    this.push(rel, st);
    if (rel !== "" && this.opts.skipDir?.({ dev: Number(st.dev), ino: Number(st.ino) })) return;
    const path = this.abs(this.rootBuf, rel);
    const names = (await readdir(path, { encoding: "buffer" }).catch((err: unknown) => {
      if (errCode(err) === "ENOENT") return [] as Buffer[];
      throw this.unreadable(rel, err);
    })) as Buffer[];
    const sorted = names.map(fromBytes).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const base = layered ? this.opts.base : undefined;
    for (const name of sorted) {
      const child = joinRel(rel, name);
      if (base) {
        const up = await lstat(this.abs(Buffer.from(base.upper), child), { bigint: true }).catch(
          () => undefined,
        );
        if (!up || isWhiteout(up)) {
          const unchanged = base.lower.subtree(child);
          if (unchanged.length > 0) {
            for (const e of unchanged) this.entries.push(e);
            continue;
          }
          // Not in the lower tree either (a mount on top, a race): read it like new.
          await this.entry(child, false);
          continue;
        }
        await this.entry(child, up.isDirectory());
      } else {
        await this.entry(child, false);
      }
    }
  }

  private async entry(rel: BinPath, layered: boolean): Promise<void> {
    let st: BigIntStats;
    try {
      st = await lstat(this.abs(this.rootBuf, rel), { bigint: true });
    } catch (err) {
      if (errCode(err) === "ENOENT") return; // removed while we walk
      throw this.unreadable(rel, err);
    }
    if (st.isDirectory()) return this.dir(rel, st, layered);
    if (st.isSymbolicLink()) {
      const target = await readlink(this.abs(this.rootBuf, rel), { encoding: "buffer" }).catch(
        (err: unknown) => {
          if (errCode(err) === "ENOENT") return undefined;
          throw this.unreadable(rel, err);
        },
      );
      if (target) this.push(rel, st, { target: fromBytes(target) });
      return;
    }
    if (st.isFile()) {
      const i = this.push(rel, st);
      this.reads.push(this.pool.run(() => this.readFile(rel, i)));
      return;
    }
    if (st.isSocket() || st.isFIFO() || isWhiteout(st)) return;
    throw new FailedPreconditionError(
      `${show(rel)} is a device file: device files cannot be captured in an image`,
    );
  }

  private async readFile(rel: BinPath, i: number): Promise<void> {
    if (this.failed) return;
    try {
      throwIfAborted(this.opts.signal);
      const fd = await (this.opts.openFile ?? defaultOpen)(this.abs(this.rootBuf, rel));
      try {
        const ref = await this.batch.writeFd(fd, (n) => {
          this.progress.bytes += n;
        });
        const e = this.entries[i] as Entry;
        e.size = ref.size;
        e.digest = ref.digest;
        this.progress.files++;
        this.opts.onProgress?.(this.progress);
      } finally {
        await closeFd(fd);
      }
    } catch (err) {
      const code = errCode(err);
      if (code === "ENOENT" || code === "ELOOP" || code === "EISDIR" || code === "EAGAIN") {
        this.entries[i] = null; // removed or replaced (symlink, directory, FIFO) while we walk
        return;
      }
      this.failed ??= errCode(err) ? this.unreadable(rel, err) : err;
    }
  }

  private unreadable(rel: BinPath, err: unknown): unknown {
    const code = errCode(err);
    if (!code) return err;
    const why = code === "EACCES" || code === "EPERM" ? "permission denied" : code;
    return new FailedPreconditionError(`cannot read ${show(rel || ".")}: ${why}`);
  }
}

/**
 * Image mtimes keep microseconds: Node sets file times as a double of
 * seconds, exact to well under a microsecond, so an unpacked tree reads back
 * the very same values.
 */
export function roundToMicros(ns: bigint): bigint {
  const us = ns >= 0n ? (ns + 500n) / 1000n : (ns - 500n) / 1000n;
  return us * 1000n;
}

/** An overlayfs whiteout: a character device with device number 0:0. */
export function isWhiteout(st: BigIntStats): boolean {
  return st.isCharacterDevice() && st.rdev === 0n;
}
