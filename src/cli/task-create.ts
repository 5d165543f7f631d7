import { type Command, InvalidArgumentError } from "commander";
import { TasksClient } from "../client/admin.ts";
import { clientFrom, run } from "./common.ts";
import { parseDuration, parsePositiveInt, parseSize } from "./parse.ts";
import { collectVolume, type VolumeOption } from "./volume-option.ts";

interface TaskCreateOptions {
  id?: string;
  runtime?: string;
  memory?: number;
  cpus?: number;
  pidsLimit?: number;
  network?: string;
  image?: string;
  allowSecret: string[];
  readinessProbe?: string;
  readinessInterval?: number;
  volume: VolumeOption[];
  fromMemorySnapshot?: string;
  workdir?: string;
}

function parseCpus(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`not a CPU count: ${v}`);
  return n;
}

export function registerTaskCreate(task: Command): void {
  task
    .command("create")
    .description("create a task and print its id; -- CMD ARG... runs CMD as its main process")
    .argument("[cmd...]", "the task's entrypoint: when it exits, the task stops")
    .option("--id <id>", "the task id (default: a generated one)")
    .option("--runtime <name>", "runc or host (default: the router's)")
    .option("--memory <size>", "memory limit, e.g. 512MiB (runc)", parseSize)
    .option("--cpus <n>", "CPU limit in cores, e.g. 0.5 (runc)", parseCpus)
    .option("--pids-limit <n>", "maximum processes in the task (runc)", parsePositiveInt)
    .option(
      "--network <mode>",
      "none (loopback only, the default), open (a route out through NAT; policy: TaskSetNetworkAccess) or host (runc)",
    )
    .option("--image <id>", "a stored image as the task's root filesystem (runc; needs /bin/sh)")
    .option(
      "--allow-secret <name>",
      "let the task's execs use this secret, whoever calls (repeatable)",
      (v: string, prev: string[]) => [...prev, v],
      [],
    )
    .option(
      "--readiness-probe <probe>",
      "exec:SHELL-CMD or tcp:PORT: the task is ready once it first succeeds (SandboxWaitUntilReady)",
    )
    .option(
      "--readiness-interval <duration>",
      "time between readiness probe attempts, 10ms to 10m (default: 250ms)",
      parseDuration,
    )
    .option("--volume <name:/path[:ro]>", "mount a volume (runc; repeatable)", collectVolume, [])
    .option(
      "--from-memory-snapshot <id>",
      "restore a memory snapshot as the task (it keeps the snapshot's runtime, limits, network, image)",
    )
    .option("-w, --workdir <dir>", "working directory of the entrypoint (a path in the task)")
    .action((argv: string[], o: TaskCreateOptions, cmd: Command) =>
      run(async () => {
        const client = clientFrom(cmd);
        try {
          const t = await new TasksClient(client).create(o.id ?? "", {
            ...(o.runtime !== undefined ? { runtime: o.runtime } : {}),
            ...(o.memory !== undefined ? { memoryBytes: o.memory } : {}),
            ...(o.cpus !== undefined ? { cpus: o.cpus } : {}),
            ...(o.pidsLimit !== undefined ? { pidsLimit: o.pidsLimit } : {}),
            ...(o.network !== undefined ? { network: o.network } : {}),
            ...(o.image !== undefined ? { image: o.image } : {}),
            ...(o.allowSecret.length > 0 ? { allowedSecrets: o.allowSecret } : {}),
            ...(o.readinessProbe !== undefined ? { readinessProbe: o.readinessProbe } : {}),
            ...(o.readinessInterval !== undefined
              ? { readinessIntervalMs: o.readinessInterval }
              : {}),
            ...(o.volume.length > 0 ? { volumes: o.volume } : {}),
            ...(o.fromMemorySnapshot !== undefined
              ? { fromMemorySnapshot: o.fromMemorySnapshot }
              : {}),
            ...(argv.length > 0 ? { entrypoint: argv } : {}),
            ...(o.workdir !== undefined ? { entrypointWorkdir: o.workdir } : {}),
          });
          process.stdout.write(`${t.taskId}\n`);
        } finally {
          client.close();
        }
        return 0;
      }),
    );
}
