import { open, rename, rm } from "node:fs/promises";
import { resolve } from "node:path";
import type { Command } from "commander";
import { ImagesAdminClient } from "../client/images.ts";
import { ProgressLine } from "../util/progress.ts";
import { clientFrom, run } from "./common.ts";

export function registerImageExport(image: Command): void {
  image
    .command("export")
    .description("write an image as an OCI image archive (for skopeo, podman, docker load)")
    .argument("<id>", "image id")
    .requiredOption("-o, --output <file>", "the archive to write")
    .action((id: string, o: { output: string }, cmd: Command) =>
      run(async () => {
        const out = resolve(o.output);
        const tmp = `${out}.part-${process.pid}`;
        const client = clientFrom(cmd);
        const progress = new ProgressLine(`exporting ${id}`);
        try {
          const exp = await new ImagesAdminClient(client).export(id);
          progress.setTotal(exp.totalBytes);
          const fh = await open(tmp, "w", 0o644);
          let n = 0;
          try {
            for await (const chunk of exp.chunks) {
              await fh.write(chunk);
              n += chunk.length;
              progress.update(n);
            }
            await fh.sync();
          } finally {
            await fh.close();
          }
          if (n !== exp.totalBytes) {
            throw new Error(`export ended after ${n} of ${exp.totalBytes} bytes`);
          }
          await rename(tmp, out);
          progress.end();
          process.stdout.write(`${out}\n`);
        } finally {
          progress.end();
          await rm(tmp, { force: true });
          client.close();
        }
        return 0;
      }),
    );
}
