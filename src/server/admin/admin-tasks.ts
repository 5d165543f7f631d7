import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError, UnimplementedError } from "../../errors.ts";
import {
  type CreateTaskRequest,
  type CreateTaskResponse,
  CreateTaskResponseSchema,
  type GetTaskRequest,
  type GetTaskResponse,
  GetTaskResponseSchema,
  type ListTasksRequest,
  type ListTasksResponse,
  ListTasksResponseSchema,
  type Task as TaskMsg,
  TaskSchema,
  TaskState,
  type TerminateTaskRequest,
  type TerminateTaskResponse,
  TerminateTaskResponseSchema,
} from "../../gen/taskrouter/v1/tasks_pb.ts";
import { quote } from "../../limits.ts";
import type { TaskSpec } from "../../runtime/runtime.ts";
import type { MemorySnapshots } from "../../snapshots/memory-snapshots.ts";
import { parseEntrypoint } from "../../tasks/entrypoint-spec.ts";
import { networkView } from "../../tasks/network-policy.ts";
import { formatProbe, parseReadinessProbe } from "../../tasks/readiness.ts";
import type { Task } from "../../tasks/task.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, unary } from "../transport/call.ts";
import { taskVolumesMsg, volumeRequestsOf } from "./admin-volumes.ts";

function toMsg(t: Task): TaskMsg {
  const rs = t.runtimeStatus();
  const net = networkView(t);
  const ep = t.entrypoint;
  return create(TaskSchema, {
    taskId: t.id,
    state:
      t.state !== "running"
        ? TaskState.TERMINATED
        : rs.state === "running"
          ? TaskState.RUNNING
          : TaskState.STOPPED,
    runtime: t.runtime.name,
    createdAtMs: BigInt(t.createdAt),
    defaultWorkdir: t.env.defaultWorkdir,
    execCount: t.execCount,
    allowedSecrets: [...t.allowedSecrets],
    stopReason: rs.state === "running" ? "" : (rs.reason ?? ""),
    memoryBytes: BigInt(t.spec.memoryBytes ?? 0),
    cpus: t.spec.cpus ?? 0,
    pidsLimit: t.spec.pidsLimit ?? 0,
    network: t.spec.network ?? (t.runtime.checkSpec ? "none" : ""),
    image: t.spec.image ?? "",
    readinessProbe: t.readiness ? formatProbe(t.readiness.probe.check) : "",
    readinessIntervalMs: t.readiness?.probe.intervalMs ?? 0,
    readyAtMs: BigInt(t.readiness?.readyAt ?? 0),
    volumes: taskVolumesMsg(t.spec.volumes),
    networkPolicy: net.short,
    networkAddress: net.info?.address ?? "",
    networkGateway: net.info?.gateway ?? "",
    networkAllowedCidrs: net.info?.policy?.cidrs ?? [],
    networkAllowedDomains: net.info?.policy?.domains.map((d) => d.name) ?? [],
    networkResolvedAddresses: net.info?.policy?.domains.flatMap((d) => d.addresses) ?? [],
    containerCount:
      (t.state === "running" && rs.state === "running" ? 1 : 0) + t.containers.activeCount,
    memorySnapshot: t.spec.memorySnapshot ?? "",
    entrypoint: ep ? [...ep.spec.argv] : [],
    entrypointWorkdir: ep?.spec.workdir ?? "",
    entrypointExitCode: ep?.status?.code,
    entrypointExitSignal: ep?.status?.signal,
    entrypointEndedAtMs: BigInt(ep?.endedAt ?? 0),
  });
}

/** The limits and network of a CreateTaskRequest (0 / empty: unset). */
function specOf(req: CreateTaskRequest): TaskSpec {
  const spec: TaskSpec = {};
  if (req.memoryBytes > 0n) {
    if (req.memoryBytes > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new InvalidArgumentError("memory_bytes is too large");
    }
    spec.memoryBytes = Number(req.memoryBytes);
  }
  if (req.cpus !== 0) spec.cpus = req.cpus;
  if (req.pidsLimit !== 0) spec.pidsLimit = req.pidsLimit;
  if (req.network !== "") {
    if (req.network !== "none" && req.network !== "host" && req.network !== "open") {
      throw new InvalidArgumentError(
        `network must be "none", "open" or "host", not ${quote(req.network)}`,
      );
    }
    spec.network = req.network;
  }
  if (req.image !== "") spec.image = req.image;
  return spec;
}

/** Handlers of taskrouter.v1.Tasks (the admin API), one thin adapter per RPC. */
export function tasksService(deps: ServerDeps, tasks: TaskManager, snapshots?: MemorySnapshots) {
  return {
    createTask: unary<CreateTaskRequest, CreateTaskResponse>(deps, "CreateTask", async (req) => {
      const probe = parseReadinessProbe(req.readinessProbe, req.readinessIntervalMs);
      if (req.fromMemorySnapshot !== "") {
        if (!snapshots) throw new UnimplementedError("this router serves no memory snapshots");
        if (req.entrypoint.length > 0 || req.volumes.length > 0) {
          throw new InvalidArgumentError(
            "a task restored from a memory snapshot keeps its processes and mounts: entrypoint and volumes cannot be set",
          );
        }
        const task = await snapshots.restore(req.taskId, req.fromMemorySnapshot, {
          runtime: req.runtime,
          spec: specOf(req),
          allowedSecrets: req.allowedSecrets,
          ...(probe ? { readinessProbe: probe } : {}),
        });
        return create(CreateTaskResponseSchema, { task: toMsg(task) });
      }
      const entrypoint = parseEntrypoint(req.entrypoint, req.entrypointWorkdir);
      return create(CreateTaskResponseSchema, {
        task: toMsg(
          await tasks.create(req.taskId, {
            runtime: req.runtime,
            spec: specOf(req),
            allowedSecrets: req.allowedSecrets,
            ...(probe ? { readinessProbe: probe } : {}),
            volumes: volumeRequestsOf(req.volumes),
            ...(entrypoint ? { entrypoint } : {}),
          }),
        ),
      });
    }),
    getTask: unary<GetTaskRequest, GetTaskResponse>(deps, "GetTask", async (req) =>
      create(GetTaskResponseSchema, { task: toMsg(tasks.get(req.taskId)) }),
    ),
    listTasks: unary<ListTasksRequest, ListTasksResponse>(deps, "ListTasks", async () =>
      create(ListTasksResponseSchema, { tasks: tasks.list().map(toMsg) }),
    ),
    terminateTask: unary<TerminateTaskRequest, TerminateTaskResponse>(
      deps,
      "TerminateTask",
      async (req) => {
        await tasks.terminate(req.taskId);
        return create(TerminateTaskResponseSchema);
      },
    ),
  };
}
