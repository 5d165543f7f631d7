import { type ServiceError, status } from "@grpc/grpc-js";
import { type ErrorKind, TaskRouterError } from "../errors.ts";

const KINDS: Partial<Record<status, ErrorKind>> = {
  [status.INVALID_ARGUMENT]: "InvalidArgument",
  [status.NOT_FOUND]: "NotFound",
  [status.ALREADY_EXISTS]: "AlreadyExists",
  [status.FAILED_PRECONDITION]: "FailedPrecondition",
  [status.ABORTED]: "Aborted",
  [status.OUT_OF_RANGE]: "OutOfRange",
  [status.PERMISSION_DENIED]: "PermissionDenied",
  [status.UNAUTHENTICATED]: "Unauthenticated",
  [status.RESOURCE_EXHAUSTED]: "ResourceExhausted",
  [status.UNAVAILABLE]: "Unavailable",
  [status.UNIMPLEMENTED]: "Unimplemented",
  [status.CANCELLED]: "Cancelled",
  [status.DEADLINE_EXCEEDED]: "DeadlineExceeded",
  [status.INTERNAL]: "Internal",
  [status.UNKNOWN]: "Unknown",
};

/** The status codes SPEC calls retryable: a retry with the identical request can cure them. */
export const RETRYABLE = new Set<status>([
  status.DEADLINE_EXCEEDED,
  status.UNAVAILABLE,
  status.CANCELLED,
  status.INTERNAL,
  status.UNKNOWN,
]);

/**
 * An error of a call, typed by its status code (`kind`), with the gRPC code
 * kept in `code`. `instanceof TaskRouterError` works for all of them.
 */
export class RpcError extends TaskRouterError {
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(KINDS[code] ?? "Unknown", message);
  }
}

export function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === "number";
}

/** Converts a grpc-js error to an RpcError (other values pass through). */
export function fromServiceError(err: unknown): unknown {
  if (!isServiceError(err)) return err;
  return new RpcError(err.code, err.details || err.message);
}
