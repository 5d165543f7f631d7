import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Command } from "commander";
import { ImagesAdminClient } from "../client/images.ts";
import { ProgressLine } from "../util/progress.ts";
import { clientFrom, run } from "./common.ts";
import { tarDirectory, tarSize } from "./tar-dir.ts";

async function* counted(
  src: AsyncIterable<Uint8Array>,
  progress: ProgressLine,
): AsyncGenerator<Uint8Array> {
  let n = 0;
  for await (const c of src) {
    n += c.length;
    progress.update(n);
    yield c;
  }
}

export function registerImageImport(image: Command): void {
  image
    .command("import")
    .description(
      "import an image: an OCI image layout (directory or tar), a `docker save` tar, or a plain directory",
    )
    .argument("<path>", "archive file or directory")
    .option("--ttl <seconds>", "lifetime in seconds (-1: never; default: 30 days, renewed on use)")
    .action((path: string, o: { ttl?: string }, cmd: Command) =>
      run(async () => {
        const abs = resolve(path);
        const st = await stat(abs);
        const layout = st.isDirectory() && (await stat(join(abs, "oci-layout")).catch(() => null));
        const format = st.isDirectory() && !layout ? "tree" : "archive";
        const total = st.isDirectory() ? await tarSize(abs) : st.size;
        const progress = new ProgressLine(`importing ${path}`, total);
        const source = st.isDirectory()
          ? tarDirectory(abs)
          : createReadStream(abs, { highWaterMark: 1024 * 1024 });
        const client = clientFrom(cmd);
        try {
          const opts: { format: "archive" | "tree"; ttlSeconds?: bigint; source: string } = {
            format,
            source: `import ${abs}`,
          };
          if (o.ttl !== undefined) opts.ttlSeconds = BigInt(o.ttl);
          const id = await new ImagesAdminClient(client).import(
            counted(source as AsyncIterable<Uint8Array>, progress),
            opts,
          );
          progress.end();
          process.stdout.write(`${id}\n`);
        } finally {
          progress.end();
          client.close();
        }
        return 0;
      }),
    );
}
