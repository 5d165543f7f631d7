import { resolve } from "node:path";
import type { Command } from "commander";
import { loadSigningKey } from "../auth/keys.ts";
import { issueToken } from "../auth/tokens.ts";
import { DEFAULT_CONFIG } from "../daemon.ts";
import { run } from "./common.ts";
import { parseDuration } from "./parse.ts";

interface IssueOptions {
  task?: string;
  admin?: boolean;
  ttl: number;
  audience?: string;
  dataDir: string;
}

export function registerTokenIssue(token: Command): void {
  token
    .command("issue")
    .description("mint a token with the router's signing key (from --data-dir) and print it")
    .option("--task <id>", "a token that reaches this task only")
    .option("--admin", "an admin token: the admin services and every task")
    .option(
      "--ttl <duration>",
      "how long the token is valid (e.g. 30m, 1h, 7d)",
      parseDuration,
      3_600_000,
    )
    .option("--audience <aud>", "set the aud claim (for a router run with --jwt-audience)")
    .option(
      "--data-dir <dir>",
      "the router's data dir, which holds its key",
      DEFAULT_CONFIG.dataDir,
    )
    .action((o: IssueOptions) =>
      run(async () => {
        if ((o.task === undefined) === (o.admin !== true)) {
          throw new Error("token issue needs exactly one of --task ID and --admin");
        }
        const key = await loadSigningKey(resolve(o.dataDir));
        const subject = o.admin ? ({ admin: true } as const) : { task: o.task ?? "" };
        const token = await issueToken(key, subject, o.ttl, { audience: o.audience });
        process.stdout.write(`${token}\n`);
        return 0;
      }),
    );
}
