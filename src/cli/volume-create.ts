import type { Command } from "commander";
import { VolumesClient } from "../client/volumes.ts";
import { clientFrom, run } from "./common.ts";

export function registerVolumeCreate(volume: Command): void {
  volume
    .command("create")
    .description("create an empty volume (tasks mount it with task create --volume)")
    .argument("<name>", "1-64 characters of [A-Za-z0-9._-], starting with a letter or digit")
    .action((name: string, _o: unknown, cmd: Command) =>
      run(async () => {
        const client = clientFrom(cmd);
        try {
          const { created } = await new VolumesClient(client).create(name);
          if (!created) process.stderr.write(`taskrouter: volume ${name} already exists\n`);
          process.stdout.write(`${name}\n`);
        } finally {
          client.close();
        }
        return 0;
      }),
    );
}
