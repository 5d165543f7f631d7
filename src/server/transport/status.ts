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
 * The longest message sent (grpc-message is a header: a long one would turn
 * the answer into RESOURCE_EXHAUSTED). Domain messages quote at most a short
 * part of client input (src/limits.ts); this is the backstop.
 */
const MAX_DETAILS = 1024;

/**
 * Maps a thrown value to a gRPC error. Domain errors keep their message (cut
 * to MAX_DETAILS characters); anything else is a bug: logged with its cause,
 * sent as a bare INTERNAL.
 */
export function toGrpcError(err: unknown, log: Logger, method: string): ServerErrorResponse {
  if (err instanceof TaskRouterError) {
    const details =
      err.message.length > MAX_DETAILS ? `${err.message.slice(0, MAX_DETAILS)}…` : err.message;
    return Object.assign(new Error(details), {
      code: CODES[err.kind],
      details,
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
