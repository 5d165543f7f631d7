import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** The native helpers native/build.sh builds (see there). */
const HELPERS = [
  "taskrouter-exec",
  "taskrouter-pty",
  "taskrouter-mount",
  "taskrouter-console",
  "taskrouter-spawner",
  "taskrouter-agent",
  "taskrouter-opentree",
  "taskrouter-reaper",
  "modal-sandbox-fs-tools",
] as const;
export type NativeHelper = (typeof HELPERS)[number];

/** The host path of a helper built by native/build.sh. */
export function nativeHelper(name: NativeHelper): string {
  return fileURLToPath(new URL(`../../build/native/${name}`, import.meta.url));
}

/** Throws, saying how to build them, when the native helpers are missing. */
export function checkNativeHelpers(): void {
  for (const name of HELPERS) {
    const path = nativeHelper(name);
    if (!existsSync(path)) {
      throw new Error(
        `${path} is missing: build it with \`npm run build:native\` (needs cc and libc6-dev)`,
      );
    }
  }
}

/**
 * Where Modal's SDKs expect the filesystem helper in every container
 * (../shared/FS-TOOLS.md): a static binary built from native/fs-tools.c.
 * OCI tasks get it bind-mounted read-only there; the host runtime runs its
 * own copy when a command's argv[0] is this path.
 */
export const FS_TOOLS_IN_TASK = "/__modal/.bin/modal-sandbox-fs-tools";
