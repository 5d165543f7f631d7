import { existsSync } from "node:fs";
import { join } from "node:path";
import { FailedPreconditionError } from "../../errors.ts";
import { CGROUP_ROOT, cgroupV2 } from "../../linux/cgroup.ts";

/**
 * A cgroup as nftables' `socket cgroupv2 level LEVEL "PATH"` names it:
 * nft 1.0 resolves PATH below /sys/fs/cgroup (CGROUP_ROOT) to the cgroup's
 * id when the rule is loaded, and the kernel compares it with the level-
 * LEVEL ancestor of the cgroup2 cgroup a socket was created in.
 */
export interface SocketCgroup {
  /** Relative to CGROUP_ROOT: "a/b" on a cgroup2 host, "unified/a/b" on a hybrid one. */
  path: string;
  /** Its depth below the cgroup2 root (a/b: 2). */
  level: number;
  /** Its directory on this machine. */
  dir: string;
}

/** Components nft gets quoted: no quote, backslash, space or `..` can reach its parser. */
const PART = /^[A-Za-z0-9_+-][A-Za-z0-9._+-]*$/;

/** The base of the cgroup2 hierarchy below CGROUP_ROOT ("" or "unified"); undefined: none. */
function cgroup2Base(): string | undefined {
  if (cgroupV2()) return "";
  return existsSync(join(CGROUP_ROOT, "unified", "cgroup.controllers")) ? "unified" : undefined;
}

/**
 * The directory of OCI `cgroupsPath` in the cgroup2 hierarchy of a hybrid
 * host (its unified mount, which cgroupDirs leaves out); undefined elsewhere.
 */
export function hybridCgroup2Dir(cgroupsPath: string): string | undefined {
  return cgroup2Base() === "unified" ? join(CGROUP_ROOT, "unified", cgroupsPath) : undefined;
}

/**
 * The cgroup2 cgroup of OCI `cgroupsPath` (absolute, as the runc runtime
 * makes them), on a cgroup2 host or in the unified hierarchy of a hybrid
 * one (where runc and crun put containers too). FailedPrecondition on a
 * host without cgroup2 (sockets carry no cgroup2 cgroup there).
 */
export function socketCgroup(cgroupsPath: string): SocketCgroup {
  const parts = cgroupsPath.split("/").filter((p) => p !== "");
  if (parts.length === 0 || !parts.every((p) => PART.test(p))) {
    throw new Error(`cgroup path ${JSON.stringify(cgroupsPath)} cannot be named in a rule`);
  }
  const base = cgroup2Base();
  if (base === undefined) {
    throw new FailedPreconditionError(
      "this machine has no cgroup2 hierarchy: a sidecar's own network policy tells its traffic apart by the cgroup2 cgroup of its sockets",
    );
  }
  const path = [base, ...parts].filter((p) => p !== "").join("/");
  return { path, level: parts.length, dir: join(CGROUP_ROOT, path) };
}
