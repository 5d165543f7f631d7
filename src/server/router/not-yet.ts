import { UnimplementedError } from "../../errors.ts";
import { type ServerDeps, serverStream, unary } from "../transport/call.ts";

/** What the RPCs of the task-level protocol (issue 12) answer until they are built. */
const REASONS = {
  SandboxStdinWriteV2: "task entrypoints (sandbox stdin) are not served by this router yet",
  SandboxStdioReadV2: "task entrypoints (sandbox stdout/stderr) are not served by this router yet",
} as const;

type NotYet = keyof typeof REASONS;

/** A unary handler that answers UNIMPLEMENTED with the method's one-line reason. */
export function notYetUnary<Req, Res>(deps: ServerDeps, method: NotYet) {
  return unary<Req, Res>(deps, method, async () => {
    throw new UnimplementedError(REASONS[method]);
  });
}

/** A server-streaming handler that answers UNIMPLEMENTED with the method's one-line reason. */
export function notYetStream<Req, Res>(deps: ServerDeps, method: NotYet) {
  return serverStream<Req, Res>(deps, method, () => {
    throw new UnimplementedError(REASONS[method]);
  });
}
