import { InvalidArgumentError } from "../errors.ts";
import { checkMaxBytes, MAX, quote } from "../limits.ts";

/**
 * Paths inside images are kept as "binary strings": one JS char per byte
 * (latin1), so file names that are not UTF-8 survive unchanged, comparison
 * with `<` is byte order, and `bin(p)` gives the exact bytes for fs calls.
 * Image paths are relative to the image root, "" being the root itself.
 */
export type BinPath = string;

/** The bytes of a binary-string path, for fs calls. */
export function bin(p: BinPath): Buffer {
  return Buffer.from(p, "latin1");
}

/** A binary string from bytes. */
export function fromBytes(b: Uint8Array): BinPath {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("latin1");
}

/** A binary string from a (UTF-8) JS string. */
export function fromUtf8(s: string): BinPath {
  return Buffer.from(s, "utf8").toString("latin1");
}

/** The UTF-8 JS string of a binary string, or undefined when its bytes are not valid UTF-8. */
export function toUtf8(p: BinPath): string | undefined {
  const b = bin(p);
  const s = b.toString("utf8");
  return Buffer.from(s, "utf8").equals(b) ? s : undefined;
}

/**
 * Printable form of a binary path for messages (invalid UTF-8 bytes become
 * U+FFFD); a long one keeps its start and end only (limits.quote).
 */
export function show(p: BinPath): string {
  return quote(bin(p).toString("utf8"), { ends: true });
}

/** Joins image-relative paths ("" is the root). */
export function joinRel(dir: BinPath, name: BinPath): BinPath {
  return dir === "" ? name : `${dir}/${name}`;
}

/**
 * Orders paths depth-first with siblings in byte order (a directory's whole
 * subtree comes right after it): compares bytewise with "/" below every byte.
 */
export function comparePaths(a: BinPath, b: BinPath): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x === 0x2f) return -1;
    if (y === 0x2f) return 1;
    return x - y;
  }
  return a.length - b.length;
}

/** True when `p` is `dir` or inside it (image-relative paths; "" contains everything). */
export function isWithin(p: BinPath, dir: BinPath): boolean {
  return dir === "" || p === dir || p.startsWith(`${dir}/`);
}

/**
 * Checks a request path (bytes of an absolute POSIX path inside the task) and
 * returns its components: at most MAX.path bytes, absolute, not `/`, no `..`
 * segment, no NUL byte, no component over MAX.pathComponent bytes.
 * Empty and `.` segments are dropped (`/a//b/./c` is `/a/b/c`).
 */
export function parseRequestPath(raw: Uint8Array): BinPath[] {
  checkMaxBytes("path", raw, MAX.path);
  const p = fromBytes(raw);
  if (p.length === 0) throw new InvalidArgumentError("path must not be empty");
  if (p.includes("\0")) throw new InvalidArgumentError("path must not contain a NUL byte");
  if (!p.startsWith("/")) throw new InvalidArgumentError(`path ${show(p)} must be absolute`);
  const parts = p.split("/").filter((s) => s !== "" && s !== ".");
  if (parts.includes("..")) {
    throw new InvalidArgumentError(`path ${show(p)} must not contain ".." segments`);
  }
  if (parts.length === 0) throw new InvalidArgumentError("path must not be the root directory /");
  for (const part of parts) checkMaxBytes("a path component", bin(part), MAX.pathComponent);
  return parts;
}
