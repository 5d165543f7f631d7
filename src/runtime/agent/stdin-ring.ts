import {
  close,
  closeSync,
  constants,
  ftruncate,
  link,
  readSync,
  rename,
  unlink,
  writev,
} from "node:fs";
import { dirname, join } from "node:path";
import {
  createNewFd,
  createOrOpenFd,
  ExecDirFileError,
  openRegularFd,
  openRegularSync,
  regularSize,
} from "./exec-dir-files.ts";

/**
 * A ring KEY.in (native/task-agent.c, "Stdin ring"): stdin byte L sits at
 * L mod RING_SIZE, and KEY.inlen holds the count of bytes written (8 bytes,
 * little-endian), rewritten after the bytes it counts and before they are
 * announced: a router that adopts the exec reads what was written from it (a
 * linear KEY.in's size says it).
 *
 * Why a ring: the page cache of a file written once and freed behind its
 * reader is new memory for every exec, and on a VM that hands freed memory
 * back to its host that memory is slow to touch again (BENCHMARKS.md, stop
 * 27: a 16 MiB write 4 ms warm, 41-61 ms cold). A ring's pages stay cached
 * and are reused, and a ring whose command stopped reading becomes the
 * task's spare (SPARE_NAME), which the task's next exec takes over.
 */
export const RING_SIZE = 64 * 1024 * 1024; // native/task-agent.c's RING_SIZE: keep them equal
/** A spare no exec took over for this long is removed (its disk and pages freed). */
const SPARE_IDLE_MS = 5 * 60 * 1000;
/** The removal timer of each exec directory's spare. */
const spareTimers = new Map<string, NodeJS.Timeout>();
/** The task's spare ring in the exec directory (no KEY.SUFFIX name can be this). */
export const SPARE_NAME = "stdin-spare";

/** Where a KEY.in's count of bytes written lives, when it is a ring. */
export function countPath(inPath: string): string {
  return `${inPath}len`;
}

/**
 * What was written into a KEY.in: a ring's count (KEY.inlen; 0 when it has
 * none yet), a linear file's size; 0 when absent or not a regular file (the
 * first write then fails: exec-dir-files.ts). `ring` undefined (the agent
 * did not say): a ring when KEY.inlen exists.
 */
export function stdinWritten(inPath: string, ring: boolean | undefined): number {
  if (ring === false) return regularSize(inPath);
  let fd: number;
  try {
    fd = openRegularSync(countPath(inPath), constants.O_RDONLY);
  } catch (err) {
    if (err instanceof ExecDirFileError) return 0;
    return ring ? 0 : regularSize(inPath);
  }
  try {
    const b = Buffer.alloc(8);
    return readSync(fd, b, 0, 8, 0) === 8 ? Number(b.readBigUInt64LE(0)) : 0;
  } finally {
    closeSync(fd);
  }
}

/** The 8 bytes of KEY.inlen for `written`. */
export function countBytes(written: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(written));
  return b;
}

/**
 * Opens a ring KEY.in and its count file for writing. The count file comes
 * first, so KEY.in never exists without it: when it is new (no ring yet) it
 * says `written` and KEY.in is the task's spare taken over by rename when
 * there is one (its pages are cached), else a new file. An existing count
 * file (an adopted exec) means the exec's files are opened as they are.
 */
export async function openRing(
  inPath: string,
  written: number,
): Promise<{ ring: number; count: number }> {
  const flags = constants.O_RDWR;
  const fresh = await createNewFd(countPath(inPath), flags);
  if (fresh === undefined) {
    const count = await openRegularFd(countPath(inPath), constants.O_RDWR);
    try {
      return { ring: await createOrOpenFd(inPath, flags), count };
    } catch (err) {
      closeSync(count);
      throw err;
    }
  }
  try {
    await pwritevAll(fresh, [countBytes(written)], 0);
    const dir = dirname(inPath);
    clearTimeout(spareTimers.get(dir));
    spareTimers.delete(dir);
    await new Promise<void>((resolve) => rename(join(dir, SPARE_NAME), inPath, () => resolve()));
    return { ring: await createOrOpenFd(inPath, flags), count: fresh };
  } catch (err) {
    closeSync(fresh);
    throw err;
  }
}

/**
 * Makes ring `inPath`, which nobody reads or writes any more, the task's
 * spare: linked, then unlinked, so it never replaces another spare. When
 * there is one already, the ring is emptied instead (truncated: its pages
 * and blocks are freed, as a linear KEY.in's are behind its reader). The
 * count file stays: it still says what was written.
 */
export function spareRing(inPath: string): Promise<void> {
  const dir = dirname(inPath);
  const spare = join(dir, SPARE_NAME);
  return new Promise<void>((resolve) =>
    link(inPath, spare, (err) => {
      if (err) return empty(inPath).then(resolve);
      unlink(inPath, () => resolve());
      // Removed when no exec takes it over for a while (rearmed by each new spare).
      clearTimeout(spareTimers.get(dir));
      const timer = setTimeout(() => {
        spareTimers.delete(dir);
        unlink(spare, () => {});
      }, SPARE_IDLE_MS);
      timer.unref();
      spareTimers.set(dir, timer);
    }),
  );
}

/** Truncates regular file `path` to 0 bytes (never through a symlink); errors ignored. */
function empty(path: string): Promise<void> {
  return openRegularFd(path, constants.O_WRONLY).then(
    (fd) => new Promise<void>((resolve) => ftruncate(fd, 0, () => close(fd, () => resolve()))),
    () => {},
  );
}

/** `chunks` cut into runs of at most `max` bytes (views, no copies), in order. */
export function* runs(chunks: Uint8Array[], max: number): Generator<Uint8Array[]> {
  let run: Uint8Array[] = [];
  let size = 0;
  for (const c of chunks) {
    for (let at = 0; at < c.length; ) {
      const n = Math.min(c.length - at, max - size);
      run.push(c.subarray(at, at + n));
      size += n;
      at += n;
      if (size === max) {
        yield run;
        run = [];
        size = 0;
      }
    }
  }
  if (size > 0) yield run;
}

/**
 * Writes `bufs` (stdin bytes from offset `at`, at most RING_SIZE of them)
 * into a ring at their places: one `pwritev`, two when they cross its end.
 */
export async function writeRing(fd: number, bufs: Uint8Array[], at: number): Promise<void> {
  const slot = at % RING_SIZE;
  const [first, rest] = splitAt(bufs, RING_SIZE - slot);
  await pwritevAll(fd, first, slot);
  if (rest.length > 0) await pwritevAll(fd, rest, 0);
}

/** `bufs` cut after `n` bytes: the views before and after. */
function splitAt(bufs: Uint8Array[], n: number): [Uint8Array[], Uint8Array[]] {
  const before: Uint8Array[] = [];
  const after: Uint8Array[] = [];
  let left = n;
  for (const b of bufs) {
    if (left >= b.length) before.push(b);
    else if (left === 0) after.push(b);
    else {
      before.push(b.subarray(0, left));
      after.push(b.subarray(left));
    }
    left = Math.max(0, left - b.length);
  }
  return [before, after];
}

/** pwritev of all of `bufs` at `pos` (one call; a short write continues where it stopped). */
export async function pwritevAll(fd: number, bufs: Uint8Array[], pos: number): Promise<void> {
  let total = 0;
  for (const b of bufs) total += b.length;
  if (total === 0) return;
  const done = await new Promise<number>((resolve, reject) =>
    writev(fd, bufs, pos, (err, n) => (err ? reject(err) : resolve(n))),
  );
  if (done === 0) throw new Error("KEY.in took no bytes");
  if (done < total) await pwritevAll(fd, splitAt(bufs, done)[1], pos + done);
}
