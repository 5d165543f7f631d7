import type { Command } from "commander";
import { ImagesAdminClient } from "../client/images.ts";
import { clientFrom, run } from "./common.ts";

export function registerImageRm(image: Command): void {
  image
    .command("rm")
    .description("remove images (their blobs go at the next gc)")
    .argument("<id...>", "image ids")
    .action((ids: string[], _o: unknown, cmd: Command) =>
      run(async () => {
        const client = clientFrom(cmd);
        try {
          const admin = new ImagesAdminClient(client);
          for (const id of ids) {
            await admin.delete(id);
            process.stdout.write(`${id}\n`);
          }
        } finally {
          client.close();
        }
        return 0;
      }),
    );
}
