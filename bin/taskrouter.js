#!/usr/bin/env node
// Runs the CLI built into dist/ (by `npm ci` through the `prepare` script, or `npm run build`):
// the bundle (dist/bundle/, scripts/bundle-cli.js: faster to load), else tsc's output
// (dist/cli/). A checkout without dist/, or TASKROUTER_FROM_SOURCE=1 (the tests set it, so they
// run the source as it is now), runs the TypeScript source through tsx's loader instead.
import { statSync } from "node:fs";

/** Modification time of a file, or -1 when it is missing. */
const mtime = (u) => statSync(u, { throwIfNoEntry: false })?.mtimeMs ?? -1;
const bundle = new URL("../dist/bundle/main.js", import.meta.url);
const compiled = new URL("../dist/cli/main.js", import.meta.url);
// The bundle unless `tsc` alone rebuilt dist/cli/ after it (an editor's or `tsc --watch` build).
let built;
if (mtime(bundle) >= Math.max(0, mtime(compiled))) built = bundle;
else if (mtime(compiled) >= 0) built = compiled;
if (process.env.TASKROUTER_FROM_SOURCE !== "1" && built) {
  await import(built.href);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../src/cli/main.ts");
}
