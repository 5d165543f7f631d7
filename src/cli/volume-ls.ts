import type { Command } from "commander";
import { VolumesClient } from "../client/volumes.ts";
import { formatBytes } from "../util/progress.ts";
import { clientFrom, run } from "./common.ts";
import { printTable } from "./table.ts";

export function registerVolumeLs(volume: Command): void {
  volume
    .command("ls")
    .description("list volumes: name, size, created, the tasks that mount them")
    .option("-q, --quiet", "print names only")
    .action((o: { quiet?: boolean }, cmd: Command) =>
      run(async () => {
        const client = clientFrom(cmd);
        try {
          const volumes = await new VolumesClient(client).list();
          if (o.quiet) {
            for (const v of volumes) process.stdout.write(`${v.name}\n`);
            return 0;
          }
          const rows = [["NAME", "SIZE", "CREATED", "MOUNTED BY"]];
          for (const v of volumes) {
            rows.push([
              v.name,
              formatBytes(Number(v.sizeBytes)),
              new Date(Number(v.createdAtMs)).toISOString(),
              v.mountedBy.length > 0 ? v.mountedBy.join(",") : "-",
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
