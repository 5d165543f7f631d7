import { Command } from "commander";
import { addGlobalOptions, addGlobalOptionsToVerbs, setGlobalOptions, verbOf } from "./globals.ts";

type Register = (parent: Command) => void;

/**
 * The verbs, each loaded only when it runs: `taskrouter --help` loads
 * commander alone, `taskrouter exec ...` the exec verb's modules only.
 * `group` verbs (task, token, secret, volume, image) hold subcommands; the others
 * register themselves on the program. `client`: the verb talks to a router
 * (it takes the global options after it too).
 */
interface Verb {
  description: string;
  group?: true;
  client?: true;
  load(): Promise<Register[]>;
}

const VERBS: Record<string, Verb> = {
  serve: {
    description: "run the router (TaskCommandRouter gRPC server)",
    load: async () => [(await import("./serve.ts")).registerServe],
  },
  exec: {
    description: "run a command in a task, streaming its output; exits with its exit code",
    client: true,
    load: async () => [(await import("./exec.ts")).registerExec],
  },
  cp: {
    description: "copy files and directories between a task and the local filesystem",
    client: true,
    load: async () => [(await import("./cp.ts")).registerCp],
  },
  task: {
    description: "manage tasks",
    group: true,
    client: true,
    load: async () => [
      (await import("./task-create.ts")).registerTaskCreate,
      (await import("./task-ls.ts")).registerTaskLs,
      (await import("./task-rm.ts")).registerTaskRm,
    ],
  },
  token: {
    description: "mint tokens with the router's key",
    group: true,
    load: async () => [(await import("./token-issue.ts")).registerTokenIssue],
  },
  secret: {
    description: "manage secrets (env vars for secret_ids)",
    group: true,
    client: true,
    load: async () => [
      (await import("./secret-create.ts")).registerSecretCreate,
      (await import("./secret-ls.ts")).registerSecretLs,
      (await import("./secret-rm.ts")).registerSecretRm,
    ],
  },
  volume: {
    description: "manage volumes (directories tasks share)",
    group: true,
    client: true,
    load: async () => [
      (await import("./volume-create.ts")).registerVolumeCreate,
      (await import("./volume-ls.ts")).registerVolumeLs,
      (await import("./volume-rm.ts")).registerVolumeRm,
    ],
  },
  image: {
    description: "manage images (snapshots, imports)",
    group: true,
    client: true,
    load: async () => [
      (await import("./image-ls.ts")).registerImageLs,
      (await import("./image-inspect.ts")).registerImageInspect,
      (await import("./image-rm.ts")).registerImageRm,
      (await import("./image-gc.ts")).registerImageGc,
      (await import("./image-import.ts")).registerImageImport,
      (await import("./image-export.ts")).registerImageExport,
      (await import("./image-push.ts")).registerImagePush,
      (await import("./image-pull.ts")).registerImagePull,
    ],
  },
  "memory-snapshot": {
    description: "manage memory snapshots (TaskSnapshotMemory; task create --from-memory-snapshot)",
    group: true,
    client: true,
    load: async () => [
      (await import("./memory-snapshot-ls.ts")).registerMemorySnapshotLs,
      (await import("./memory-snapshot-rm.ts")).registerMemorySnapshotRm,
    ],
  },
};

const program = addGlobalOptions(
  new Command("taskrouter").description("task command router: run commands inside tasks over gRPC"),
  false,
)
  .enablePositionalOptions()
  .configureHelp({ showGlobalOptions: true });

const argv = process.argv.slice(2);
const chosen = verbOf(argv);
for (const [name, verb] of Object.entries(VERBS)) {
  if (name !== chosen) {
    // Listed in the help only; never run (the chosen verb is the one the line names).
    program.command(name).description(verb.description);
    continue;
  }
  const registers = await verb.load();
  const parent = verb.group ? program.command(name).description(verb.description) : program;
  for (const register of registers) register(parent);
  const cmd = program.commands.find((c) => c.name() === name);
  if (verb.client && cmd) addGlobalOptionsToVerbs(cmd);
  if (name === "exec" && cmd) {
    // exec passes its operands through unparsed (they may be a command's); take the global
    // options among them where they cannot be the command's (exec-verbs.ts).
    const { execOperandGlobals } = await import("./exec-verbs.ts");
    cmd.hook("preAction", (_, action) => {
      const [first, rest] = action.processedArgs as [string, string[]];
      let taken: ReturnType<typeof execOperandGlobals>;
      try {
        taken = execOperandGlobals(first, rest);
      } catch (err) {
        action.error(`error: ${(err as Error).message}`);
      }
      if (!taken) return;
      setGlobalOptions(action, taken.options);
      action.processedArgs[1] = taken.rest;
    });
  }
}

await program.parseAsync(process.argv);
