import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { SecretsClient } from "../client/secrets.ts";
import { parseEnvFile } from "../secrets/env-file.ts";
import { clientFrom, run } from "./common.ts";

interface CreateOptions {
  fromLiteral: string[];
  fromEnvFile: string[];
  overwrite?: boolean;
}

/** Collects a repeated option's raw values; checked in the action, where errors never echo them. */
function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}

export function registerSecretCreate(secret: Command): void {
  secret
    .command("create")
    .description("create a secret from KEY=VALUE pairs (values are never printed)")
    .argument("<name>", "secret name")
    .option("--from-literal <KEY=VALUE>", "a pair (repeatable)", collect, [])
    .option(
      "--from-env-file <file>",
      "pairs from an env file, '-' for stdin (repeatable; see README)",
      collect,
      [],
    )
    .option("--overwrite", "replace the data of an existing secret")
    .action((name: string, o: CreateOptions, cmd: Command) =>
      run(async () => {
        const data = await gatherPairs(o);
        const client = clientFrom(cmd);
        try {
          const res = await new SecretsClient(client).create(name, data, {
            overwrite: o.overwrite ?? false,
          });
          process.stdout.write(`${res.secret?.name ?? name}\n`);
        } finally {
          client.close();
        }
        return 0;
      }),
    );
}

/** Env files in order, then literals; a key given twice is an error. Messages never hold values. */
async function gatherPairs(o: CreateOptions): Promise<Record<string, string>> {
  if (o.fromLiteral.length === 0 && o.fromEnvFile.length === 0) {
    throw new Error("secret create needs --from-literal KEY=VALUE or --from-env-file FILE");
  }
  const data = new Map<string, string>();
  const from = new Map<string, string>();
  const add = (key: string, value: string, where: string) => {
    const prev = from.get(key);
    if (prev !== undefined) throw new Error(`key ${key} is given twice (${prev} and ${where})`);
    data.set(key, value);
    from.set(key, where);
  };
  for (const file of o.fromEnvFile) {
    const source = file === "-" ? "stdin" : file;
    const text = file === "-" ? await readStdin() : await readFile(file, "utf8");
    for (const e of parseEnvFile(text, source)) add(e.key, e.value, `${source}:${e.line}`);
  }
  for (const [i, lit] of o.fromLiteral.entries()) {
    const eq = lit.indexOf("=");
    if (eq <= 0) {
      throw new Error(`--from-literal takes KEY=VALUE (literal ${i + 1} has no key before '=')`);
    }
    add(lit.slice(0, eq), lit.slice(eq + 1), `--from-literal ${i + 1}`);
  }
  return Object.fromEntries(data);
}

async function readStdin(): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of process.stdin as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts).toString("utf8");
}
