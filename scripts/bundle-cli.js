#!/usr/bin/env node
// Bundles the CLI (src/cli/main.ts and all it loads; esbuild strips the types, `tsc` checks
// them) into dist/bundle/, or the directory given as the argument (tests), which
// bin/taskrouter.js runs when it is there. The output directory must sit two levels below the
// project root, as src/*/ files do: modules find build/native/ relative to themselves.
// Why: Node 20 loads each ES module file on its own (resolve, read, compile); @bufbuild/protobuf
// alone is dozens of files, and a `taskrouter cp` of a small file spent ~75 ms of its ~245 ms
// more than now loading modules (docs/DECISIONS.md, "A bundled CLI"). Verbs stay lazy: each is
// a chunk of its own.
//
// Bundled: our code and the pure-JS libraries the client verbs load. Left to node_modules
// (imported at run time as before): grpc-js, whose CompressionFilter src/client/in-place-frames.ts
// reaches by its path (a bundled copy would be another class); and what loads files or
// workers by path or is native (pino's transports, reflection and health's .proto files,
// prom-client, node-pty, tsx).
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const BUNDLED = new Set(["@bufbuild/protobuf", "commander", "jose", "tar-stream"]);
const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
const external = Object.keys(pkg.dependencies).filter((name) => !BUNDLED.has(name));

await build({
  entryPoints: [fileURLToPath(new URL("../src/cli/main.ts", import.meta.url))],
  outdir: process.argv[2] ?? fileURLToPath(new URL("../dist/bundle", import.meta.url)),
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  external: [...external, "*.node"],
  // CommonJS libraries inside the bundle require Node's built-ins.
  banner: {
    js: 'import { createRequire as taskrouterRequire } from "node:module"; const require = taskrouterRequire(import.meta.url);',
  },
  sourcemap: true,
  logLevel: "warning",
});
