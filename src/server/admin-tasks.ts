import { create } from "@bufbuild/protobuf";
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
} from "../gen/taskrouter/v1/tasks_pb.ts";
import type { Task } from "../tasks/task.ts";
import type { TaskManager } from "../tasks/task-manager.ts";
import { type ServerDeps, unary } from "./call.ts";

function toMsg(t: Task): TaskMsg {
  return create(TaskSchema, {
    taskId: t.id,
    state: t.state === "running" ? TaskState.RUNNING : TaskState.TERMINATED,
    runtime: t.runtime.name,
    createdAtMs: BigInt(t.createdAt),
    defaultWorkdir: t.env.defaultWorkdir,
    execCount: t.execCount,
  });
}

/** Handlers of taskrouter.v1.Tasks (the admin API), one thin adapter per RPC. */
export function tasksService(deps: ServerDeps, tasks: TaskManager) {
  return {
    createTask: unary<CreateTaskRequest, CreateTaskResponse>(deps, "CreateTask", async (req) =>
      create(CreateTaskResponseSchema, {
        task: toMsg(await tasks.create(req.taskId, { runtime: req.runtime })),
      }),
    ),
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
