import { readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { ExitStatus } from "../../runtime/runtime.ts";
import type { SidecarVolume } from "../../volumes/sidecar-volumes.ts";

/**
 * The final result of a container (modal.client.GenericResult's meaning):
 * "success" for exit code 0, "failure" for another exit code, "terminated"
 * for one ended by TaskContainerTerminate or a signal (exit code 128 + n;
 * 137 when no exit status is known).
 */
export interface ContainerResult {
  status: "success" | "failure" | "terminated";
  exitCode: number;
  /** One line for people ("" for success). */
  message: string;
}

/** What `<task dir>/containers.json` keeps of one sidecar (never its environment). */
export interface ContainerRecord {
  id: string;
  name: string;
  imageId: string;
  argv: string[];
  workdir?: string;
  fingerprint: string;
  /** ms since the epoch. */
  createdAt: number;
  endedAt?: number;
  /** Set once it ended. */
  result?: ContainerResult;
  /** Its volume mounts (held while it runs, again after a router restart); absent: none. */
  volumes?: SidecarVolume[];
}

/**
 * The result of an entrypoint that ended with `status` (undefined: no exit
 * status, its processes were killed); `terminated`: TaskContainerTerminate
 * ended it.
 */
export function resultOf(status: ExitStatus | undefined, terminated: boolean): ContainerResult {
  if (status?.code === 0) return { status: "success", exitCode: 0, message: "" };
  if (status?.code !== undefined) {
    return { status: "failure", exitCode: status.code, message: `exited with code ${status.code}` };
  }
  const signal = status?.signal ?? 9;
  const why = terminated
    ? "terminated (TaskContainerTerminate)"
    : status
      ? `killed by signal ${signal}`
      : "ended without an exit status (its processes were killed)";
  return { status: "terminated", exitCode: 128 + signal, message: why };
}

const FILE = "containers.json";

/** The records kept in `dir` (none when the file is missing or does not parse). */
export async function readContainerRecords(dir: string): Promise<ContainerRecord[]> {
  try {
    const list = JSON.parse(await readFile(join(dir, FILE), "utf8")) as unknown;
    return Array.isArray(list) ? (list as ContainerRecord[]) : [];
  } catch {
    return [];
  }
}

/** Writes `records` to `dir` atomically (temp file, rename). */
export async function writeContainerRecords(
  dir: string,
  records: ContainerRecord[],
): Promise<void> {
  const file = join(dir, FILE);
  await writeFile(`${file}.tmp`, JSON.stringify(records), { mode: 0o600 });
  await rename(`${file}.tmp`, file);
}
