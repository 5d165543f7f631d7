import { create } from "@bufbuild/protobuf";
import {
  type ExecInfo,
  Execs,
  InspectExecRequestSchema,
  type InspectExecResponse,
  ListExecsRequestSchema,
  type ListExecsResponse,
  ResizeExecRequestSchema,
  SignalExecRequestSchema,
} from "../gen/taskrouter/v1/execs_pb.ts";
import type { RouterClient } from "./client.ts";
import { methodsOf } from "./methods.ts";

const def = methodsOf(Execs);

/** Our exec extensions (taskrouter.v1.Execs) over a RouterClient's channel. */
export class ExecsClient {
  constructor(private readonly client: RouterClient) {}

  /** Sets a PTY exec's window size (rows x cols). */
  async resize(taskId: string, execId: string, rows: number, cols: number): Promise<void> {
    await this.client.unary(
      def("resizeExec"),
      create(ResizeExecRequestSchema, { taskId, execId, rows, cols }),
    );
  }

  /** Sends a signal (number, or name such as "TERM"/"SIGTERM") to the exec's process group. */
  async signal(taskId: string, execId: string, signal: number | string): Promise<void> {
    await this.client.unary(
      def("signalExec"),
      create(SignalExecRequestSchema, {
        taskId,
        execId,
        signal:
          typeof signal === "number"
            ? { case: "number", value: signal }
            : { case: "name", value: signal },
      }),
    );
  }

  /** The task's execs, oldest first. */
  async list(taskId: string): Promise<ExecInfo[]> {
    const res = await this.client.unary<ListExecsResponse>(
      def("listExecs"),
      create(ListExecsRequestSchema, { taskId }),
    );
    return res.execs;
  }

  async inspect(taskId: string, execId: string): Promise<ExecInfo> {
    const res = await this.client.unary<InspectExecResponse>(
      def("inspectExec"),
      create(InspectExecRequestSchema, { taskId, execId }),
    );
    if (!res.exec) throw new Error("InspectExec returned no exec");
    return res.exec;
  }
}
