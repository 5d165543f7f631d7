import type { TaskEnv } from "../../runtime/runtime.ts";
import type { SidecarRuntime } from "../../runtime/sidecars.ts";
import { checkSidecarMounts, type SidecarVolumes } from "../../volumes/sidecar-volumes.ts";
import { sidecarPolicy } from "./container-network.ts";
import { type ContainerRecord, readContainerRecords } from "./container-record.ts";
import { type ContainerRequest, newContainerId } from "./container-request.ts";
import type { ContainerTask } from "./container-views.ts";

/**
 * Starts the sidecar `req` asks for (validated, fingerprint `fp`, with its
 * complete environment `env`) in `task`: resolves its own network policy
 * (sidecarPolicy: FailedPrecondition, InvalidArgument, Unavailable), holds its volumes (NotFound
 * for an unknown one, FailedPrecondition for an unusable sub_path: nothing
 * started), then the runtime starts it; the volumes stay held for the new
 * sidecar (released when its start fails). Returns its record and its own
 * defaults; nothing is remembered or saved here.
 */
export async function launchSidecar(
  task: ContainerTask,
  sc: SidecarRuntime,
  volumes: SidecarVolumes,
  req: ContainerRequest,
  fp: string,
  env: Record<string, string>,
): Promise<{ rec: ContainerRecord; env: TaskEnv }> {
  const policy = await sidecarPolicy(task, req); // before anything is held
  const id = newContainerId();
  const mem = req.memoryMib !== undefined ? req.memoryMib * 1024 * 1024 : task.spec.memoryBytes;
  const held = volumes.attach(task.id, id, checkSidecarMounts(req.volumeMounts));
  let ownEnv: TaskEnv;
  try {
    ownEnv = await sc.start(task.id, id, {
      imageId: req.imageId,
      argv: req.argv,
      env,
      cwd: req.workdir,
      network: task.spec.network === "host" ? "host" : "none",
      memoryBytes: mem,
      volumes: held.binds,
      pty: req.pty && { rows: req.pty.rows, cols: req.pty.cols },
      policy,
    });
  } catch (err) {
    volumes.release(task.id, id);
    throw err;
  } finally {
    held.close(); // the runtime made its mounts (or none): the sub_path directories may close
  }
  const rec: ContainerRecord = {
    id,
    name: req.name,
    imageId: req.imageId,
    argv: req.argv,
    fingerprint: fp,
    createdAt: Date.now(),
  };
  if (req.workdir !== undefined) rec.workdir = req.workdir;
  if (held.volumes.length > 0) rec.volumes = held.volumes;
  return { rec, env: ownEnv };
}

/**
 * The sidecars recorded in `dir` (an earlier router's), oldest first: each
 * one still running adopted through the task's SidecarRuntime, its volumes
 * held again; one that cannot be adopted is recorded TERMINATED ("lost at a
 * router restart", the error to `onError`). Ended ones are kept as they are.
 */
export async function adoptSidecars(
  task: ContainerTask,
  volumes: SidecarVolumes,
  dir: string,
  onError: (err: unknown) => void,
): Promise<{ rec: ContainerRecord; env: TaskEnv }[]> {
  const sc = task.runtime.sidecars;
  const out: { rec: ContainerRecord; env: TaskEnv }[] = [];
  for (const rec of await readContainerRecords(dir)) {
    let env = task.env;
    if (!rec.result && sc) {
      env = await sc.adopt(task.id, rec.id, rec.imageId).catch((err: unknown) => {
        onError(err);
        rec.result = { status: "terminated", exitCode: 137, message: "lost at a router restart" };
        return task.env;
      });
      if (!rec.result && rec.volumes) volumes.adopt(task.id, rec.id, rec.volumes);
    }
    out.push({ rec, env });
  }
  return out;
}
