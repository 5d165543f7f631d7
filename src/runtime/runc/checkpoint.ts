import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { FailedPreconditionError } from "../../errors.ts";
import { runTool } from "../../util/run-tool.ts";
import type { OciCli } from "./oci-cli.ts";

const run = promisify(execFile);

/**
 * Memory snapshots of runc-runtime tasks through the OCI runtime's own
 * checkpoint and restore (docs/DECISIONS.md, "Memory snapshots"). A
 * checkpoint directory holds:
 *
 *   format     the OCI runtime that made it (runc, crun, runsc): only it restores it
 *   image/     the runtime's checkpoint image (`checkpoint --image-path`)
 *   upper/     a copy of the task's writable layers (bundle/upper): its own files
 *
 * The rootfs is an overlay on the host, outside the runtime's image (gVisor
 * serves it through its gofer, CRIU leaves it to the caller), so the task's
 * writes are carried here and put back under the new task's overlays.
 */

/** Longest runtime error text kept in a refusal (its first lines). */
const MAX_REASON = 300;

/**
 * Checkpoints container `cid` (bundle `bundle`) into `dir`. On failure:
 * FailedPrecondition naming the OCI runtime and its own error, trimmed and
 * with this machine's paths of `dir` left out; nothing of `dir` is kept. The
 * runtime leaves the task running then (CRIU and gVisor resume on a failed
 * dump). On success the container has stopped (checkpoint without
 * `--leave-running`: no process runs on past the saved state), and its
 * writable layers are copied into `dir/upper`.
 */
export async function checkpointContainer(
  cli: OciCli,
  cid: string,
  bundle: string,
  taskId: string,
  dir: string,
): Promise<{ format: string }> {
  const image = join(dir, "image");
  const work = join(dir, "work");
  await mkdir(image, { recursive: true, mode: 0o700 });
  await mkdir(work, { recursive: true, mode: 0o700 });
  const cmd = cli.command(["checkpoint", "--image-path", image, "--work-path", work, cid]);
  try {
    await run(cmd.file, cmd.args, { maxBuffer: 1024 * 1024 });
  } catch (err) {
    const reason = await failureReason(err, work, dir);
    await rm(dir, { recursive: true, force: true });
    throw new FailedPreconditionError(
      `the ${cli.flavor.name} OCI runtime cannot checkpoint task ${taskId}: ${reason}`,
    );
  }
  await rm(work, { recursive: true, force: true });
  const upper = join(bundle, "upper");
  // -a: no symlink followed, modes, owners, times and xattrs (overlay whiteouts, opaque dirs) kept.
  if (existsSync(upper)) await runTool("cp", ["-a", "--reflink=auto", "--", upper, dir]);
  await writeFile(join(dir, "format"), cli.flavor.name);
  return { format: cli.flavor.name };
}

/**
 * Prepares bundle `bundle` of a task restored from checkpoint `dir`: checks
 * the checkpoint is this OCI runtime's (FailedPrecondition otherwise) and puts
 * its copy of the writable layers in place. Called before the rootfs is mounted.
 */
export async function restoreLayers(cli: OciCli, dir: string, bundle: string): Promise<void> {
  const format = (await readFile(join(dir, "format"), "utf8").catch(() => "")).trim();
  if (format !== cli.flavor.name) {
    throw new FailedPreconditionError(
      `the memory snapshot was made by the ${format || "unknown"} OCI runtime; this router runs ${cli.flavor.name}`,
    );
  }
  const upper = join(dir, "upper");
  // Into a fresh `upper` (cp would copy into an existing one); nothing is mounted yet.
  await rm(join(bundle, "upper"), { recursive: true, force: true });
  if (existsSync(upper)) await runTool("cp", ["-a", "--reflink=auto", "--", upper, bundle]);
}

/**
 * Restores container `cid` of `bundle` from checkpoint `dir`, detached, as
 * `OciCli.runDetached` starts one (stdin and stdout /dev/null, stderr
 * `logFile`; the same flags for `network`).
 */
export async function restoreDetached(
  cli: OciCli,
  cid: string,
  bundle: string,
  dir: string,
  logFile: string,
  network: "none" | "host",
): Promise<void> {
  const work = join(bundle, "restore-work");
  await mkdir(work, { recursive: true, mode: 0o700 });
  const failed = await cli.startDetached(
    [
      ...cli.flavor.runFlags(network),
      "restore",
      "--detach",
      "--image-path",
      join(dir, "image"),
      "--work-path",
      work,
      "--bundle",
      bundle,
      cid,
    ],
    logFile,
  );
  if (failed) {
    throw new FailedPreconditionError(
      `the ${cli.flavor.name} OCI runtime cannot restore the memory snapshot (${trim(failed, [dir, bundle])})`,
    );
  }
}

/**
 * The runtime's reason for a failed checkpoint: the first `Error` line of
 * CRIU's dump log when there is one (runc prints only "criu failed ...
 * log file: PATH"), else its stderr; trimmed, paths under `dir` removed.
 */
async function failureReason(err: unknown, work: string, dir: string): Promise<string> {
  const stderr = String((err as { stderr?: unknown }).stderr ?? "");
  const msg = stderr
    .split("\n")
    .map((l) => l.replace(/^time="[^"]*" level=\w+ msg="(.*)"$/, "$1").replace(/\\n/g, " "))
    .filter((l) => l.trim() !== "")
    .join("; ");
  const log = await readFile(join(work, "dump.log"), "utf8").catch(() => "");
  const criu = /Error \([^)]*\): (.*)/.exec(log)?.[1];
  const text = criu ? `${msg.replace(/ *log file: \S+/, "")} (criu: ${criu})` : msg;
  return trim(text || String((err as Error).message ?? err), [dir]);
}

/** `text` on one line, at most MAX_REASON characters, with the host paths `hide` left out. */
function trim(text: string, hide: string[]): string {
  let t = text;
  for (const h of hide) t = t.replaceAll(h, "…");
  t = t.replace(/\s+/g, " ").trim();
  return t.length > MAX_REASON ? `${t.slice(0, MAX_REASON)}…` : t;
}
