import type { Command } from "commander";
import { VolumesClient } from "../client/volumes.ts";
import { TaskRouterError } from "../errors.ts";
import { CLI_ERROR_EXIT, clientFrom, run } from "./common.ts";

export function registerVolumeRm(volume: Command): void {
  volume
    .command("rm")
    .description("remove volumes and their files (refused while a task mounts one)")
    .argument("<name...>", "volume names")
    .action((names: string[], _o: unknown, cmd: Command) =>
      run(async () => {
        const client = clientFrom(cmd);
        let failed = 0;
        try {
          const volumes = new VolumesClient(client);
          for (const name of names) {
            try {
              await volumes.delete(name);
              process.stdout.write(`${name}\n`);
            } catch (err) {
              if (!(err instanceof TaskRouterError)) throw err;
              process.stderr.write(`taskrouter: ${err.kind}: ${err.message}\n`);
              failed++;
            }
          }
        } finally {
          client.close();
        }
        return failed > 0 ? CLI_ERROR_EXIT : 0;
      }),
    );
}
