import { create } from "@bufbuild/protobuf";
import {
  CreateTaskRequestSchema,
  type CreateTaskResponse,
  GetTaskRequestSchema,
  type GetTaskResponse,
  ListTasksRequestSchema,
  type ListTasksResponse,
  type Task,
  Tasks,
  TerminateTaskRequestSchema,
} from "../gen/taskrouter/v1/tasks_pb.ts";
import type { RouterClient } from "./client.ts";
import { methodsOf } from "./methods.ts";

const def = methodsOf(Tasks);

/** The admin API (taskrouter.v1.Tasks) over a RouterClient's channel. */
export class TasksClient {
  constructor(private readonly client: RouterClient) {}

  /** Creates a task; limits and network are for runc tasks (unset: none / "none"). */
  async create(
    taskId = "",
    opts: {
      runtime?: string;
      memoryBytes?: number;
      cpus?: number;
      pidsLimit?: number;
      network?: string;
      /** Id of a stored image to use as the task's root filesystem (runc). */
      image?: string;
      /** Secrets the task's execs may use, whoever calls (`--allow-secret`). */
      allowedSecrets?: string[];
      /** "exec:SHELL-CMD" or "tcp:PORT" (`--readiness-probe`). */
      readinessProbe?: string;
      /** Milliseconds between probe attempts; unset: the router's default. */
      readinessIntervalMs?: number;
      /** Volumes to mount (`--volume NAME:/path[:ro]`). */
      volumes?: { name: string; path: string; readOnly?: boolean }[];
      /** Restore this memory snapshot as the task (`--from-memory-snapshot`). */
      fromMemorySnapshot?: string;
      /** The task's main process (`task create -- CMD ARG...`) and its workdir. */
      entrypoint?: string[];
      entrypointWorkdir?: string;
    } = {},
  ): Promise<Task> {
    const res = await this.client.unary<CreateTaskResponse>(
      def("createTask"),
      create(CreateTaskRequestSchema, {
        taskId,
        runtime: opts.runtime ?? "",
        memoryBytes: BigInt(opts.memoryBytes ?? 0),
        cpus: opts.cpus ?? 0,
        pidsLimit: opts.pidsLimit ?? 0,
        network: opts.network ?? "",
        image: opts.image ?? "",
        allowedSecrets: opts.allowedSecrets ?? [],
        readinessProbe: opts.readinessProbe ?? "",
        readinessIntervalMs: opts.readinessIntervalMs ?? 0,
        volumes: (opts.volumes ?? []).map((v) => ({ ...v, readOnly: v.readOnly ?? false })),
        fromMemorySnapshot: opts.fromMemorySnapshot ?? "",
        entrypoint: opts.entrypoint ?? [],
        entrypointWorkdir: opts.entrypointWorkdir ?? "",
      }),
    );
    if (!res.task) throw new Error("CreateTask returned no task");
    return res.task;
  }

  async get(taskId: string): Promise<Task> {
    const res = await this.client.unary<GetTaskResponse>(
      def("getTask"),
      create(GetTaskRequestSchema, { taskId }),
    );
    if (!res.task) throw new Error("GetTask returned no task");
    return res.task;
  }

  async list(): Promise<Task[]> {
    const res = await this.client.unary<ListTasksResponse>(
      def("listTasks"),
      create(ListTasksRequestSchema, {}),
    );
    return res.tasks;
  }

  async terminate(taskId: string): Promise<void> {
    await this.client.unary(def("terminateTask"), create(TerminateTaskRequestSchema, { taskId }));
  }
}
