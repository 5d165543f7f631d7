import type { Command } from "commander";
import { SecretsClient } from "../client/secrets.ts";
import { clientFrom, run } from "./common.ts";

export function registerSecretRm(secret: Command): void {
  secret
    .command("rm")
    .description("remove secrets (running commands keep their environment)")
    .argument("<name...>", "secret names")
    .action((names: string[], _o: unknown, cmd: Command) =>
      run(async () => {
        const client = clientFrom(cmd);
        let missing = 0;
        try {
          const secrets = new SecretsClient(client);
          for (const name of names) {
            if (await secrets.delete(name)) {
              process.stdout.write(`${name}\n`);
            } else {
              process.stderr.write(`taskrouter: secret ${name} not found\n`);
              missing++;
            }
          }
        } finally {
          client.close();
        }
        return missing > 0 ? 1 : 0;
      }),
    );
}
