import type { Command } from "commander";
import { ImagesAdminClient } from "../client/images.ts";
import { formatBytes } from "../util/progress.ts";
import { clientFrom, run } from "./common.ts";
import { printTable } from "./table.ts";

function expiry(ms: bigint, expired: boolean): string {
  if (ms === 0n) return "never";
  return expired ? "expired" : new Date(Number(ms)).toISOString();
}

export function registerImageLs(image: Command): void {
  image
    .command("ls")
    .description("list images")
    .option("-q, --quiet", "print ids only")
    .action((o: { quiet?: boolean }, cmd: Command) =>
      run(async () => {
        const client = clientFrom(cmd);
        try {
          const images = await new ImagesAdminClient(client).list();
          if (o.quiet) {
            for (const i of images) process.stdout.write(`${i.imageId}\n`);
            return 0;
          }
          const rows = [["IMAGE ID", "CREATED", "EXPIRES", "FILES", "SIZE", "IN USE", "SOURCE"]];
          for (const i of images) {
            rows.push([
              i.imageId,
              new Date(Number(i.createdAtMs)).toISOString(),
              expiry(i.expiresAtMs, i.expired),
              i.encrypted ? "encrypted" : String(i.files),
              i.encrypted ? "-" : formatBytes(Number(i.bytes)),
              String(i.users),
              i.source,
            ]);
          }
          printTable(rows);
        } finally {
          client.close();
        }
        return 0;
      }),
    );
}
