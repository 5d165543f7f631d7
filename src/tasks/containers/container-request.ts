import { createHash, randomBytes } from "node:crypto";
import { AlreadyExistsError, InvalidArgumentError } from "../../errors.ts";
import { checkInlineEnv, checkPty, checkWorkdir, type EnvSource } from "../../exec/exec-request.ts";
import { checkMaxBytes, MAX, quote } from "../../limits.ts";
import { checkSidecarMounts, type SidecarVolumeRequest } from "../../volumes/sidecar-volumes.ts";
import { checkPolicyLists } from "../network-policy.ts";
import { type ContainerPty, ptyFingerprint } from "./container-pty.ts";

/** The name of a task's main container (PROTOCOL-LATER §3.4): always there, never a sidecar's. */
export const MAIN = "main";

/** Sidecar names: a DNS label's characters, 1-63 of them. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** The most memory a sidecar may ask for (memory_reserve_consume_mib): 1 TiB. */
const MAX_MEMORY_MIB = 1024 * 1024;

/** A request to start a sidecar container in a task (TaskContainerCreate), in domain terms. */
export interface ContainerRequest {
  name: string;
  imageId: string;
  /** The entrypoint's argv. */
  argv: string[];
  /** Env vars over the base environment, in order (see EnvSource). */
  envSources: EnvSource[];
  /** Absolute path inside the sidecar; undefined: the image's default. */
  workdir: string | undefined;
  /** Volumes to mount (`volume_mounts`). */
  volumeMounts: SidecarVolumeRequest[];
  /** The sidecar's own network policy; undefined: unset (open). */
  network:
    | { kind: "open" | "blocked" | "unspecified"; cidrs: string[]; domains: string[] }
    | { kind: "allowlist"; cidrs: string[]; domains: string[] }
    | undefined;
  /** The entrypoint's terminal (`pty_info` with `enabled`); undefined: none (stdio /dev/null). */
  pty: ContainerPty | undefined;
  /** MiB the sidecar takes (`memory_reserve_consume_mib`): its memory limit; undefined: the task's. */
  memoryMib: number | undefined;
}

/**
 * Checks what can be checked without the task, before anything is made:
 * InvalidArgument for a malformed request, AlreadyExists for the name
 * "main" (the main container always exists, §5.10), FailedPrecondition for
 * what this router cannot honour; workdir and terminal as checkWorkdir and checkPty do.
 * An allowlist's entries are checked as TaskSetNetworkAccess's. Volume
 * mounts are checked as checkSidecarMounts does; whether the volumes exist
 * is not (SidecarVolumes.attach). Changes nothing.
 */
export function validateContainerRequest(req: ContainerRequest): void {
  checkMaxBytes("container_name", req.name, MAX.containerId);
  if (req.name === "") throw new InvalidArgumentError("container_name must not be empty");
  if (req.name === MAIN) {
    throw new AlreadyExistsError(
      `container "main" already exists: it is the task's main container`,
    );
  }
  if (!NAME.test(req.name)) {
    throw new InvalidArgumentError(
      `container_name ${quote(req.name)} must be 1-63 characters of [A-Za-z0-9._-], starting with a letter or digit`,
    );
  }
  checkMaxBytes("image_id", req.imageId, MAX.imageId);
  if (req.imageId === "") throw new InvalidArgumentError("image_id must not be empty");
  if (req.argv.length === 0) {
    throw new InvalidArgumentError(
      "args must not be empty: images of this router carry no default command, so a sidecar needs its entrypoint",
    );
  }
  for (const src of req.envSources) {
    if ("secretId" in src) checkMaxBytes("secret id", src.secretId, MAX.secretName);
  }
  if (req.workdir !== undefined) checkMaxBytes("workdir", req.workdir, MAX.path);
  checkInlineEnv(req.envSources);
  checkWorkdir(req.workdir);
  const net = req.network;
  if (net && net.kind !== "allowlist" && (net.cidrs.length > 0 || net.domains.length > 0)) {
    throw new InvalidArgumentError(
      "allowed_cidrs and allowed_domains need network_access_type ALLOWLIST",
    );
  }
  if (net?.kind === "blocked") {
    throw new InvalidArgumentError(
      "network_access BLOCKED is refused for a sidecar: it could not reach the main container",
    );
  }
  if (net?.kind === "allowlist") checkPolicyLists(net.cidrs, net.domains); // container-network.ts
  if (req.memoryMib !== undefined && !(req.memoryMib >= 8 && req.memoryMib <= MAX_MEMORY_MIB)) {
    throw new InvalidArgumentError(
      `memory_reserve_consume_mib must be between 8 and ${MAX_MEMORY_MIB} (MiB), not ${req.memoryMib}`,
    );
  }
  checkSidecarMounts(req.volumeMounts);
  if (req.pty) checkPty(req.pty);
}

/** Equal for two requests exactly when they ask for the same container (a hash: env values are not kept). */
export function containerFingerprint(req: ContainerRequest): string {
  const sources = req.envSources.map((s) =>
    "env" in s
      ? Object.entries(s.env).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      : s.secretId,
  );
  const text = JSON.stringify([
    req.name,
    req.imageId,
    req.argv,
    sources,
    req.workdir ?? null,
    req.network ?? null,
    req.memoryMib ?? null,
    // Appended only when there are some: fingerprints of sidecars without volumes stay as they were.
    ...(req.volumeMounts.length > 0
      ? [
          checkSidecarMounts(req.volumeMounts).map((m) => [
            m.name,
            m.path,
            m.readOnly,
            m.subPath || null,
            m.backgroundCommits,
          ]),
        ]
      : []),
    // Likewise only with a terminal: fingerprints of sidecars without one stay as they were.
    ...(req.pty ? [ptyFingerprint(req.pty)] : []),
  ]);
  return createHash("sha256").update(text).digest("base64");
}

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/** A new container id: `ctr-` and a ULID (48 bits of ms time, 80 random bits, Crockford base32). */
export function newContainerId(now = Date.now()): string {
  let n = (BigInt(now) << 80n) | BigInt(`0x${randomBytes(10).toString("hex")}`);
  let s = "";
  for (let i = 0; i < 26; i++) {
    s = CROCKFORD[Number(n & 31n)] + s;
    n >>= 5n;
  }
  return `ctr-${s}`;
}
