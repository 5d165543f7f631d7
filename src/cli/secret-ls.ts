import type { Command } from "commander";
import { SecretsClient } from "../client/secrets.ts";
import { clientFrom, run } from "./common.ts";

export function registerSecretLs(secret: Command): void {
  secret
    .command("ls")
    .description("list secret names (never values)")
    .option("--keys", "also print each secret's key names")
    .action((o: { keys?: boolean }, cmd: Command) =>
      run(async () => {
        const client = clientFrom(cmd);
        try {
          for (const s of await new SecretsClient(client).list()) {
            process.stdout.write(o.keys ? `${s.name}\t${s.keys.join(",")}\n` : `${s.name}\n`);
          }
        } finally {
          client.close();
        }
        return 0;
      }),
    );
}
