import type { Command } from "commander";
import { ImagesAdminClient } from "../client/images.ts";
import { formatBytes, ProgressLine } from "../util/progress.ts";
import { clientFrom, run } from "./common.ts";

export function registerImagePull(image: Command): void {
  image
    .command("pull")
    .description("pull an image from the router's registry into its store")
    .argument("<id>", "image id")
    .action((id: string, _o: unknown, cmd: Command) =>
      run(async () => {
        const client = clientFrom(cmd);
        const progress = new ProgressLine(`pulling ${id}`);
        try {
          const r = await new ImagesAdminClient(client).pull(id, (p) => {
            progress.setTotal(Number(p.bytesTotal));
            progress.update(Number(p.bytesDone), `  ${p.blobsDone}/${p.blobsTotal} blobs`);
          });
          progress.end();
          process.stderr.write(
            `pulled ${id}: ${r.blobsDone} blob(s) received (${formatBytes(Number(r.bytesTotal))}), ${r.blobsSkipped} already there\n`,
          );
          process.stdout.write(`${r.reference}\n`);
        } finally {
          progress.end();
          client.close();
        }
        return 0;
      }),
    );
}
