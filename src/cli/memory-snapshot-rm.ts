import type { Command } from "commander";
import { MemorySnapshotsClient } from "../client/memory-snapshots.ts";
import { clientFrom, run } from "./common.ts";

export function registerMemorySnapshotRm(group: Command): void {
  group
    .command("rm")
    .description("remove memory snapshots (fails for one that does not exist)")
    .argument("<id...>", "snapshot ids")
    .action((ids: string[], _o: unknown, cmd: Command) =>
      run(async () => {
        const client = clientFrom(cmd);
        try {
          const admin = new MemorySnapshotsClient(client);
          for (const id of ids) {
            if (!(await admin.delete(id))) throw new Error(`no such memory snapshot: ${id}`);
            process.stdout.write(`${id}\n`);
          }
        } finally {
          client.close();
        }
        return 0;
      }),
    );
}
