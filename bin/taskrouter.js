#!/usr/bin/env node
// Runs the CLI compiled into dist/ (built by `npm ci` through the `prepare` script, or
// `npm run build`). A checkout without dist/, or TASKROUTER_FROM_SOURCE=1 (the tests set it, so
// they run the source as it is now), runs the TypeScript source through tsx's loader instead.
import { existsSync } from "node:fs";

const dist = new URL("../dist/cli/main.js", import.meta.url);
if (process.env.TASKROUTER_FROM_SOURCE !== "1" && existsSync(dist)) {
  await import(dist.href);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../src/cli/main.ts");
}
