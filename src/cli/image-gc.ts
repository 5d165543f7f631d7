import type { Command } from "commander";
import { ImagesAdminClient } from "../client/images.ts";
import { formatBytes } from "../util/progress.ts";
import { clientFrom, run } from "./common.ts";

export function registerImageGc(image: Command): void {
  image
    .command("gc")
    .description("remove expired images, then blobs and caches no image uses")
    .action((_o: unknown, cmd: Command) =>
      run(async () => {
        const client = clientFrom(cmd);
        try {
          const r = await new ImagesAdminClient(client).gc();
          for (const id of r.imagesRemoved) process.stdout.write(`removed ${id}\n`);
          process.stdout.write(
            `${r.imagesRemoved.length} image(s) and ${r.blobsRemoved} blob(s) removed, ${formatBytes(Number(r.bytesFreed))} freed\n`,
          );
        } finally {
          client.close();
        }
        return 0;
      }),
    );
}
