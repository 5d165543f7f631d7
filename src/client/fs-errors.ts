import type { ErrorKind } from "../errors.ts";
import { TaskRouterError } from "../errors.ts";
import type { ExitStatus } from "../runtime/runtime.ts";

/**
 * The helper's `error_kind`s (FS-TOOLS.md §2), plus `Unknown` for a failure
 * whose stderr is not the helper's error JSON (a signal, a missing helper).
 */
export type FsErrorKind =
  | "NotFound"
  | "NotDirectory"
  | "IsFile"
  | "AlreadyExists"
  | "IsDirectory"
  | "PathAlreadyExists"
  | "DirectoryNotEmpty"
  | "PermissionDenied"
  | "FileTooLarge"
  | "NotSupported"
  | "InvalidArgument"
  | "Io"
  | "Unknown";

/** The project's error kind for each helper kind (what `kind` and the CLI show). */
const KIND: Record<string, ErrorKind> = {
  NotFound: "NotFound",
  NotDirectory: "FailedPrecondition",
  IsFile: "FailedPrecondition",
  AlreadyExists: "AlreadyExists",
  IsDirectory: "FailedPrecondition",
  PathAlreadyExists: "AlreadyExists",
  DirectoryNotEmpty: "FailedPrecondition",
  PermissionDenied: "PermissionDenied",
  FileTooLarge: "OutOfRange",
  NotSupported: "Unimplemented",
  InvalidArgument: "InvalidArgument",
};

/**
 * A failed filesystem operation in a task: the helper exited non-zero.
 * `errorKind` is the helper's kind (string, as sent; unknown kinds pass
 * through), `kind` the nearest project kind, `message` reads
 * `<helper message>: <path>`.
 */
export class FsError extends TaskRouterError {
  constructor(
    readonly errorKind: FsErrorKind | (string & {}),
    readonly helperMessage: string,
    readonly path: string,
    readonly detail?: string,
  ) {
    super(KIND[errorKind] ?? "Unknown", `${helperMessage}: ${path}`);
    this.name = "FsError";
  }
}

/**
 * The error of a helper that ended with `status`: its stderr JSON when that
 * is one object with string `error_kind` and non-empty `message` (as the
 * SDKs require), else the SDKs' generic "Operation on ... failed" error.
 */
export function helperError(status: ExitStatus, stderr: Buffer, path: string): FsError {
  try {
    const j = JSON.parse(stderr.toString("utf8").trim()) as Record<string, unknown>;
    if (
      j &&
      typeof j === "object" &&
      typeof j.error_kind === "string" &&
      typeof j.message === "string" &&
      j.message !== ""
    ) {
      return new FsError(
        j.error_kind,
        j.message,
        path,
        typeof j.detail === "string" ? j.detail : undefined,
      );
    }
  } catch {
    // not the helper's JSON: the generic error below
  }
  const how =
    status.signal !== undefined ? `signal ${status.signal}` : `exit code ${status.code ?? "?"}`;
  const text = stderr.toString("utf8").trim().slice(0, 300);
  return new FsError("Unknown", `operation failed with ${how}${text ? ` (${text})` : ""}`, path);
}
