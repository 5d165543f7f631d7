import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

/** Where native/build.sh puts the Node-API addon `name` (taskrouter-NAME.node). */
export function addonPath(name: string): string {
  return fileURLToPath(new URL(`../../build/native/taskrouter-${name}.node`, import.meta.url));
}

/**
 * The exports of the Node-API addon at `path`, or why it cannot be used: not
 * built (native/build.sh builds the addons only where Node's headers are
 * found) or not loadable. Every addon is optional: its caller falls back.
 */
export function loadAddon<T>(path: string): { exports: T } | { why: string } {
  if (!existsSync(path)) {
    return { why: `${path} is missing (native/build.sh builds it when Node's headers are found)` };
  }
  try {
    return { exports: createRequire(import.meta.url)(path) as T };
  } catch (err) {
    return { why: `${path} could not be used: ${(err as Error).message}` };
  }
}
