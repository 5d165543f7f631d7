import type { Command } from "commander";
import { MemorySnapshotsClient } from "../client/memory-snapshots.ts";
import { formatBytes } from "../util/progress.ts";
import { clientFrom, run } from "./common.ts";
import { printTable } from "./table.ts";

const iso = (ms: bigint) => new Date(Number(ms)).toISOString();

export function registerMemorySnapshotLs(group: Command): void {
  group
    .command("ls")
    .description("list memory snapshots: id, task, runtime, created, expiry, size")
    .option("-q, --quiet", "print ids only")
    .action((o: { quiet?: boolean }, cmd: Command) =>
      run(async () => {
        const client = clientFrom(cmd);
        try {
          const snapshots = await new MemorySnapshotsClient(client).list();
          if (o.quiet) {
            for (const s of snapshots) process.stdout.write(`${s.snapshotId}\n`);
            return 0;
          }
          const rows = [["SNAPSHOT ID", "TASK", "RUNTIME", "CREATED", "EXPIRES", "SIZE"]];
          for (const s of snapshots) {
            rows.push([
              s.snapshotId,
              s.taskId,
              `${s.runtime}/${s.ociRuntime}`,
              iso(s.createdAtMs),
              iso(s.expiresAtMs),
              formatBytes(Number(s.bytes)),
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
