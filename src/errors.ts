/**
 * The domain's typed errors. Domain modules throw these; only the server edge
 * (src/server/status.ts) maps them to gRPC status codes, and the client maps
 * status codes back to them. Any other thrown value is a bug and becomes
 * INTERNAL with its cause logged, never sent to the client.
 */
export type ErrorKind =
  | "InvalidArgument"
  | "NotFound"
  | "AlreadyExists"
  | "FailedPrecondition"
  | "Aborted"
  | "OutOfRange"
  | "PermissionDenied"
  | "Unauthenticated"
  | "ResourceExhausted"
  | "Unavailable"
  | "Unimplemented"
  | "Cancelled"
  | "DeadlineExceeded"
  | "Internal"
  | "Unknown";

export class TaskRouterError extends Error {
  readonly kind: ErrorKind;
  constructor(kind: ErrorKind, message: string) {
    super(message);
    this.kind = kind;
    this.name = `${kind}Error`;
  }
}

export class InvalidArgumentError extends TaskRouterError {
  constructor(message: string) {
    super("InvalidArgument", message);
  }
}
export class NotFoundError extends TaskRouterError {
  constructor(message: string) {
    super("NotFound", message);
  }
}
export class AlreadyExistsError extends TaskRouterError {
  constructor(message: string) {
    super("AlreadyExists", message);
  }
}
export class FailedPreconditionError extends TaskRouterError {
  constructor(message: string) {
    super("FailedPrecondition", message);
  }
}
/** The operation was superseded by another (e.g. a stdin stream evicted by a status call). */
export class AbortedError extends TaskRouterError {
  constructor(message: string) {
    super("Aborted", message);
  }
}
export class OutOfRangeError extends TaskRouterError {
  constructor(message: string) {
    super("OutOfRange", message);
  }
}
export class PermissionDeniedError extends TaskRouterError {
  constructor(message: string) {
    super("PermissionDenied", message);
  }
}
export class UnauthenticatedError extends TaskRouterError {
  constructor(message: string) {
    super("Unauthenticated", message);
  }
}
export class ResourceExhaustedError extends TaskRouterError {
  constructor(message: string) {
    super("ResourceExhausted", message);
  }
}
export class UnavailableError extends TaskRouterError {
  constructor(message: string) {
    super("Unavailable", message);
  }
}
export class UnimplementedError extends TaskRouterError {
  constructor(message: string) {
    super("Unimplemented", message);
  }
}
/** A wait ran out of its own time budget (e.g. SandboxWaitUntilReady's `timeout`). */
export class DeadlineExceededError extends TaskRouterError {
  constructor(message: string) {
    super("DeadlineExceeded", message);
  }
}
export class CancelledError extends TaskRouterError {
  constructor(message = "cancelled") {
    super("Cancelled", message);
  }
}

/** Throws CancelledError if the signal is aborted (its reason when that is a TaskRouterError). */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    throw signal.reason instanceof TaskRouterError ? signal.reason : new CancelledError();
  }
}
