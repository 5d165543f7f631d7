import { posix } from "node:path";
import { InvalidArgumentError } from "../errors.ts";
import { checkMaxBytes, MAX, quote } from "../limits.ts";

/** Volume names: 1-64 characters of [A-Za-z0-9._-], starting with a letter or digit (never a path). */
export const VOLUME_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** At most this many volumes are mounted into one task. */
export const MAX_TASK_VOLUMES = 32;

/** Task paths a volume may not cover: the runtime's own mounts and helpers. */
const RESERVED = ["/proc", "/sys", "/dev", "/.taskrouter", "/__modal"];

/** A volume to mount into a new task, as a client asked for it. */
export interface VolumeMountRequest {
  /** The volume's name. */
  name: string;
  /** Absolute path in the task. */
  path: string;
  readOnly: boolean;
}

/** Throws InvalidArgument unless `name` is a valid volume name. */
export function checkVolumeName(name: string): void {
  if (!VOLUME_NAME.test(name)) {
    throw new InvalidArgumentError(
      `volume name ${quote(name)} must be 1-64 characters of [A-Za-z0-9._-], starting with a letter or digit`,
    );
  }
}

/**
 * Throws InvalidArgument unless `path` is where a volume may appear in a
 * task: absolute, normalized (no `.`, `..`, `//` or trailing `/`), printable,
 * not `/` and not in or above a reserved directory (RESERVED).
 */
export function checkMountPath(path: string): void {
  checkMaxBytes("volume path", path, MAX.path);
  const bad = (why: string) =>
    new InvalidArgumentError(`volume path ${quote(path, { ends: true })} ${why}`);
  if (!path.startsWith("/")) throw bad("must be absolute");
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it refuses
  if (/[\u0000-\u001f\u007f]/.test(path)) throw bad("must not contain control characters");
  if (path === "/") throw bad("must not be the task's root");
  if (posix.normalize(path) !== path || path.endsWith("/")) {
    throw bad("must be normalized (no '.', '..', '//' or trailing '/')");
  }
  for (const c of path.split("/")) {
    if (Buffer.byteLength(c) > MAX.pathComponent) throw bad("has a component past NAME_MAX");
  }
  for (const r of RESERVED) {
    if (path === r || path.startsWith(`${r}/`) || r.startsWith(`${path}/`)) {
      throw bad(`must not cover ${r} (the runtime's)`);
    }
  }
}

/**
 * Checks the volumes of a new task: at most MAX_TASK_VOLUMES, valid names
 * and paths, no two at one path and no volume at two paths (as Modal's SDKs
 * refuse). Returns them sorted by path (a parent directory before what is
 * mounted inside it). InvalidArgument otherwise.
 */
export function checkMountRequests(mounts: readonly VolumeMountRequest[]): VolumeMountRequest[] {
  if (mounts.length > MAX_TASK_VOLUMES) {
    throw new InvalidArgumentError(`a task may mount at most ${MAX_TASK_VOLUMES} volumes`);
  }
  const names = new Set<string>();
  const paths = new Set<string>();
  for (const m of mounts) {
    checkVolumeName(m.name);
    checkMountPath(m.path);
    if (names.has(m.name)) {
      throw new InvalidArgumentError(`volume ${m.name} is mounted at two paths (once only)`);
    }
    if (paths.has(m.path)) {
      throw new InvalidArgumentError(`two volumes are mounted at ${quote(m.path, { ends: true })}`);
    }
    names.add(m.name);
    paths.add(m.path);
  }
  return [...mounts]
    .map((m) => ({ name: m.name, path: m.path, readOnly: m.readOnly }))
    .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
