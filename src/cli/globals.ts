import { type Command, Option } from "commander";

/**
 * The options every client verb shares (server, token, TLS). They are
 * accepted before the verb (`taskrouter --server X task ls`) and after it
 * (`taskrouter task ls --server X`), as kubectl does; given in both places,
 * the one before the verb wins. This module stays light: `taskrouter --help`
 * loads it and commander only.
 */
const GLOBAL_OPTIONS: readonly (readonly [flags: string, description: string])[] = [
  ["--server <host:port>", "router address (default: $TASKROUTER_SERVER or 127.0.0.1:7878)"],
  ["--token <jwt>", "bearer token for the router (default: $TASKROUTER_TOKEN)"],
  ["--tls", "connect with TLS (system CAs unless --tls-ca)"],
  ["--tls-ca <file>", "trust this PEM CA or certificate (implies --tls)"],
  ["--tls-insecure", "TLS without checking the certificate, for dev certs (implies --tls)"],
];

/** The global options' flags that take a value (their next argument is not a verb). */
const TAKES_VALUE = new Set(
  GLOBAL_OPTIONS.filter(([f]) => f.includes("<")).map(([f]) => f.split(" ")[0] as string),
);

/** Adds the global options to `cmd`: shown in its help (the program), or hidden (a verb). */
export function addGlobalOptions(cmd: Command, hidden: boolean): Command {
  for (const [flags, description] of GLOBAL_OPTIONS) {
    const opt = new Option(flags, description);
    cmd.addOption(hidden ? opt.hideHelp() : opt);
  }
  return cmd;
}

/** True for the attribute name of a global option (`server`, `tlsCa`...). */
export function isGlobalOption(attributeName: string): boolean {
  return GLOBAL_OPTIONS.some(([f]) => new Option(f).attributeName() === attributeName);
}

/**
 * Adds the global options, hidden, to every command under `cmd` that has no
 * subcommands (the verbs that run), so they parse after the verb too.
 */
export function addGlobalOptionsToVerbs(cmd: Command): void {
  if (cmd.commands.length === 0) addGlobalOptions(cmd, true);
  for (const sub of cmd.commands) addGlobalOptionsToVerbs(sub);
}

/** The global options' long flags (`--server`, `--tls`...). */
const FLAGS = new Set(GLOBAL_OPTIONS.map(([f]) => f.split(" ")[0] as string));

/**
 * Takes the global options out of the operands of a verb that passes its
 * operands through unparsed (`exec ls TASK --server X`, `exec kill TASK EXEC
 * --token T`): `--server X`, `--server=X` and the bare switches (`--tls`).
 * `--` ends the search: it and everything after it stay in `rest` verbatim,
 * so a command's own arguments are never taken. Returns the options by
 * attribute name (`tlsCa`...) in the order given, and the other operands.
 * Throws on a value option with no value.
 */
export function takeGlobalOptions(args: readonly string[]): {
  options: [attributeName: string, value: string | true][];
  rest: string[];
} {
  const options: [string, string | true][] = [];
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (a === "--") {
      rest.push(...args.slice(i));
      break;
    }
    const eq = a.indexOf("=");
    const flag = eq > 0 ? a.slice(0, eq) : a;
    if (!FLAGS.has(flag) || (eq > 0 && !TAKES_VALUE.has(flag))) {
      rest.push(a);
      continue;
    }
    const name = new Option(flag).attributeName();
    if (!TAKES_VALUE.has(flag)) options.push([name, true]);
    else if (eq > 0) options.push([name, a.slice(eq + 1)]);
    else {
      const value = args[i + 1];
      if (value === undefined || value === "--") {
        const flags = GLOBAL_OPTIONS.find(([f]) => f.startsWith(`${flag} `))?.[0] ?? flag;
        throw new Error(`option '${flags}' argument missing`);
      }
      options.push([name, value]);
      i++;
    }
  }
  return { options, rest };
}

/**
 * Sets global options taken from operands (takeGlobalOptions) on `cmd`, as
 * if given after the verb: a later one wins over an earlier one there, and
 * one given before the verb still wins over both (optsWithGlobals).
 */
export function setGlobalOptions(cmd: Command, options: readonly [string, string | true][]): void {
  for (const [name, value] of options) cmd.setOptionValueWithSource(name, value, "cli");
}

/**
 * The verb of a command line (its first operand, skipping the global
 * options before it and their values); `help VERB` names VERB. Undefined when
 * there is none (`taskrouter --help`).
 */
export function verbOf(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === "--") return argv[i + 1];
    if (a.startsWith("-")) {
      if (TAKES_VALUE.has(a)) i++;
      continue;
    }
    return a === "help" ? (argv[i + 1] ?? a) : a;
  }
  return undefined;
}
