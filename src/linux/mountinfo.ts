import { readFile } from "node:fs/promises";

/**
 * One line of /proc/<pid>/mountinfo (proc(5)), the fields we use. Paths are
 * unescaped (\040 is a space...) and in the encoding the table was read with.
 */
export interface MountInfo {
  /** The device of the mount's filesystem, `major:minor` (as st_dev shows it). */
  device: string;
  mountPoint: string;
  /** Filesystem type ("overlay", "tmpfs"...). */
  fsType: string;
  /**
   * The filesystem's own options (an overlay's lowerdir, upperdir, workdir),
   * as the kernel writes them: split on commas first, then unescape each.
   */
  superOptions: string;
}

/** Decodes the octal escapes (\040 for a space...) of a mountinfo field. */
export function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) =>
    String.fromCharCode(Number.parseInt(oct, 8)),
  );
}

/** Parses the text of a mountinfo file; lines it cannot read are skipped. */
export function parseMountInfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const f = line.split(" ");
    // Six fixed fields, optional ones, "-", then type, source and super options.
    const sep = f.indexOf("-", 6);
    if (sep < 6) continue;
    out.push({
      device: f[2] ?? "",
      mountPoint: unescapeMountField(f[4] ?? ""),
      fsType: f[sep + 1] ?? "",
      superOptions: f[sep + 3] ?? "",
    });
  }
  return out;
}

/**
 * The mounts of the router's mount namespace, or with `pid` those of that
 * process's (paths as seen from its root), in mount order. `encoding`
 * "latin1" keeps every byte of a path as one character (for paths that are
 * not UTF-8: `Buffer.from(path, "latin1")` gives the bytes back).
 */
export async function mountInfo(
  pid: number | "self" = "self",
  encoding: "utf8" | "latin1" = "utf8",
): Promise<MountInfo[]> {
  return parseMountInfo(await readFile(`/proc/${pid}/mountinfo`, encoding));
}

/** The `major:minor` of a st_dev value (glibc's gnu_dev_major/minor). */
export function deviceName(dev: number | bigint): string {
  const d = BigInt(dev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** Mount points at or below `dir`, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  const points = (await mountInfo())
    .map((m) => m.mountPoint)
    .filter((p) => p === dir || p.startsWith(prefix));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}
