import type { ExitStatus } from "../../runtime/runtime.ts";

/** The `exit_status` oneof of Poll and Wait responses; unset while running. */
export function exitStatusOneof(
  s: ExitStatus | undefined,
):
  | { case: "code"; value: number }
  | { case: "signal"; value: number }
  | { case: undefined; value?: undefined } {
  if (!s) return { case: undefined };
  return s.signal !== undefined
    ? { case: "signal", value: s.signal }
    : { case: "code", value: s.code };
}
