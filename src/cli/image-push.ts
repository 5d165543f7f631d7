import type { Command } from "commander";
import { ImagesAdminClient } from "../client/images.ts";
import { ProgressLine } from "../util/progress.ts";
import { clientFrom, run } from "./common.ts";

export function registerImagePush(image: Command): void {
  image
    .command("push")
    .description("push an image to the router's registry (serve --registry) and wait")
    .argument("<id>", "image id")
    .action((id: string, _o: unknown, cmd: Command) =>
      run(async () => {
        const client = clientFrom(cmd);
        const progress = new ProgressLine(`pushing ${id}`);
        try {
          const r = await new ImagesAdminClient(client).push(id, (p) => {
            progress.setTotal(Number(p.bytesTotal));
            progress.update(Number(p.bytesDone), `  ${p.blobsDone}/${p.blobsTotal} blobs`);
          });
          progress.end();
          process.stderr.write(
            `pushed ${id}: ${r.blobsDone} blob(s) sent, ${r.blobsSkipped} already there\n`,
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
