#!/usr/bin/env node
// Runs the CLI built into dist/ (by `npm ci` through the `prepare` script, or `npm run build`):
// the bundle (dist/bundle/, scripts/bundle-cli.js: faster to load), else tsc's output
// (dist/cli/). A checkout without dist/, or TASKROUTER_FROM_SOURCE=1 (the tests set it, so they
// run the source as it is now), runs the TypeScript source through tsx's loader instead.
import { existsSync } from "node:fs";

const built = ["../dist/bundle/main.js", "../dist/cli/main.js"]
  .map((p) => new URL(p, import.meta.url))
  .find((u) => existsSync(u));
if (process.env.TASKROUTER_FROM_SOURCE !== "1" && built) {
  await import(built.href);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../src/cli/main.ts");
}
