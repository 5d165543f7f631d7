import { Metadata, type ServerErrorResponse, status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { type ErrorKind, TaskRouterError } from "../../errors.ts";

const CODES: Record<ErrorKind, status> = {
  InvalidArgument: status.INVALID_ARGUMENT,
  NotFound: status.NOT_FOUND,
  AlreadyExists: status.ALREADY_EXISTS,
  FailedPrecondition: status.FAILED_PRECONDITION,
  Aborted: status.ABORTED,
  OutOfRange: status.OUT_OF_RANGE,
  PermissionDenied: status.PERMISSION_DENIED,
  Unauthenticated: status.UNAUTHENTICATED,
  ResourceExhausted: status.RESOURCE_EXHAUSTED,
  Unavailable: status.UNAVAILABLE,
  Unimplemented: status.UNIMPLEMENTED,
  Cancelled: status.CANCELLED,
  DeadlineExceeded: status.DEADLINE_EXCEEDED,
  Internal: status.INTERNAL,
  Unknown: status.UNKNOWN,
};

/**
 * Maps a thrown value to a gRPC error. Domain errors keep their message;
 * anything else is a bug: logged with its cause, sent as a bare INTERNAL.
 */
export function toGrpcError(err: unknown, log: Logger, method: string): ServerErrorResponse {
  if (err instanceof TaskRouterError) {
    return Object.assign(new Error(err.message), {
      code: CODES[err.kind],
      details: err.message,
      metadata: new Metadata(),
    });
  }
  log.error({ err, method }, "internal error");
  return Object.assign(new Error("internal error"), {
    code: status.INTERNAL,
    details: "internal error",
    metadata: new Metadata(),
  });
}
