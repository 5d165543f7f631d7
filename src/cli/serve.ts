import { type Command, InvalidArgumentError, Option } from "commander";
import { issueToken } from "../auth/tokens.ts";
import { type Daemon, type DaemonConfig, DEFAULT_CONFIG, startDaemon } from "../daemon.ts";
import { TaskRouterError } from "../errors.ts";
import { createLogger } from "../log.ts";
import { DEFAULT_TASK_SUBNET } from "../runtime/network/task-networks.ts";
import { DEFAULT_SERVER } from "./common.ts";
import { parseDuration, parsePositiveInt, parseSize } from "./parse.ts";

interface ServeOptions {
  listen: string;
  dataDir: string;
  retention: number;
  outputCap: number;
  memoryLimit: number;
  drainGrace: number;
  entrypointRetain?: number;
  maxExecsPerTask: number;
  logLevel: string;
  demo?: boolean;
  auth: "jwt" | "none";
  jwtPublicKey?: string;
  jwks?: string;
  jwtAudience?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsSelfSigned?: boolean;
  allowRuntimeDebug?: boolean;
  ptyIdleTimeout: number;
  memorySnapshotTtl: number;
  runtime: DaemonConfig["runtime"];
  ociRuntime: string;
  seccomp: string;
  taskSubnet: string;
  metricsListen?: string;
  registry?: string;
  registryInsecure?: boolean;
  registryAuth?: string;
}

/** The demo task's token (printed by `serve --demo`) lasts this long. */
const DEMO_TOKEN_TTL_MS = 24 * 3_600_000;

/** The TLS part of the config from the flags; throws on a half or double setting. */
function tlsConfig(o: ServeOptions): DaemonConfig["tls"] {
  if (o.tlsSelfSigned && (o.tlsCert || o.tlsKey)) {
    throw new Error("--tls-self-signed and --tls-cert/--tls-key exclude each other");
  }
  if (o.tlsSelfSigned) return { selfSigned: true };
  if (!o.tlsCert !== !o.tlsKey) throw new Error("--tls-cert and --tls-key go together");
  return o.tlsCert && o.tlsKey ? { certFile: o.tlsCert, keyFile: o.tlsKey } : undefined;
}

export function registerServe(program: Command): void {
  const d = DEFAULT_CONFIG;
  program
    .command("serve")
    .description("run the router (TaskCommandRouter gRPC server)")
    .option("--listen <host:port>", "address to serve on", d.listen)
    .option("--data-dir <dir>", "where tasks, output spill files and state live", d.dataDir)
    .option(
      "--retention <duration>",
      "keep finished execs and their output this long",
      parseDuration,
      d.retentionMs,
    )
    .option(
      "--output-cap <size>",
      "output kept per exec before the command is paused",
      parseSize,
      d.outputCap,
    )
    .option(
      "--memory-limit <size>",
      "output per stream kept in memory before spilling to disk",
      parseSize,
      d.memoryLimit,
    )
    .option(
      "--drain-grace <duration>",
      "grace for descendants holding output pipes after exit",
      parseDuration,
      d.drainGraceMs,
    )
    .option(
      "--entrypoint-retain <size>",
      "output of a task's entrypoint kept per stream; older bytes are dropped (default 16MiB)",
      (v: string) => {
        const n = parseSize(v);
        if (n < 1) throw new InvalidArgumentError(`the retention must be 1 byte or more: ${v}`);
        return n;
      },
    )
    .option(
      "--max-execs-per-task <n>",
      "execs a task may hold at once",
      parsePositiveInt,
      d.maxExecsPerTask,
    )
    .option("--log-level <level>", "pino log level (trace..fatal, silent)", "info")
    .option("--demo", "create a task named 'demo' and print a command to try")
    .addOption(
      new Option(
        "--auth <mode>",
        "jwt: every call needs a bearer token; none: no checks (loopback only)",
      )
        .choices(["jwt", "none"])
        .default("jwt"),
    )
    .option("--jwt-public-key <file>", "also accept tokens signed by this PEM public key (SPKI)")
    .option("--jwks <file>", "also accept tokens signed by a key in this JWKS file")
    .option("--jwt-audience <aud>", "accept only tokens whose aud claim holds this value")
    .option("--tls-cert <file>", "serve TLS (beside cleartext) with this PEM certificate chain")
    .option("--tls-key <file>", "the PEM private key of --tls-cert")
    .option("--tls-self-signed", "serve TLS with a development certificate kept in the data dir")
    .option(
      "--pty-idle-timeout <duration>",
      "end a PTY session whose stdin had no write this long (0: never)",
      parseDuration,
      d.ptyIdleTimeoutMs,
    )
    .option(
      "--memory-snapshot-ttl <duration>",
      "memory snapshots (TaskSnapshotMemory) are deleted this long after they were taken",
      (v: string) => {
        const ms = parseDuration(v);
        if (ms <= 0) throw new InvalidArgumentError("must be positive");
        return ms;
      },
      d.memorySnapshotTtlMs,
    )
    .addOption(
      new Option(
        "--runtime <name>",
        "runtime of tasks created without one (auto: runc when root with a working runc, else host)",
      )
        .choices(["auto", "runc", "host"])
        .default(d.runtime),
    )
    .option(
      "--oci-runtime <path>",
      "OCI runtime binary of the runc runtime (runc, crun, runsc)",
      d.ociRuntime,
    )
    .option(
      "--seccomp <profile>",
      "seccomp filter of runc tasks: default (Docker's default profile), unconfined, or a FILE" +
        " holding an OCI linux.seccomp object",
      d.seccomp,
    )
    .option(
      "--task-subnet <cidr>",
      "IPv4 block the addresses of --network open tasks come from (a /30 each)",
      DEFAULT_TASK_SUBNET,
    )
    .option(
      "--metrics-listen <host:port>",
      "serve Prometheus metrics at http://HOST:PORT/metrics (plain HTTP, no token)",
    )
    .option(
      "--registry <host[:port]/repo>",
      "push every image made here to this OCI registry repository; pull missing images from it",
    )
    .option("--registry-insecure", "talk to --registry over plain http (default https)")
    .option("--registry-auth <file>", "credentials for --registry: a docker config.json (auths)")
    .option(
      "--allow-runtime-debug",
      "let execs ask for runtime_debug (ptrace rights in their task)",
    )
    .action(async (o: ServeOptions) => {
      const log = createLogger(o.logLevel);
      const config: DaemonConfig = {
        listen: o.listen,
        dataDir: o.dataDir,
        runtime: o.runtime,
        ociRuntime: o.ociRuntime,
        seccomp: o.seccomp,
        taskSubnet: o.taskSubnet,
        retentionMs: o.retention,
        outputCap: o.outputCap,
        memoryLimit: o.memoryLimit,
        drainGraceMs: o.drainGrace,
        entrypointRetain: o.entrypointRetain,
        maxExecsPerTask: o.maxExecsPerTask,
        auth: {
          mode: o.auth,
          publicKeyFile: o.jwtPublicKey,
          jwksFile: o.jwks,
          audience: o.jwtAudience,
        },
        allowRuntimeDebug: o.allowRuntimeDebug === true,
        ptyIdleTimeoutMs: o.ptyIdleTimeout,
        memorySnapshotTtlMs: o.memorySnapshotTtl,
        metricsListen: o.metricsListen,
      };
      if (o.registry) {
        config.registry = {
          ref: o.registry,
          insecure: o.registryInsecure === true,
          authFile: o.registryAuth,
        };
      } else if (o.registryInsecure || o.registryAuth) {
        process.stderr.write(
          "taskrouter: cannot start: --registry-insecure and --registry-auth need --registry\n",
        );
        process.exitCode = 1;
        return;
      }
      let daemon: Daemon;
      try {
        config.tls = tlsConfig(o);
        daemon = await startDaemon(config, log);
      } catch (err) {
        const msg = err instanceof TaskRouterError ? err.message : (err as Error).message;
        process.stderr.write(`taskrouter: cannot start: ${msg}\n`);
        process.exitCode = 1;
        return;
      }
      const started = daemon;
      let closing = false;
      const stop = (sig: string) => {
        if (closing) return;
        closing = true;
        log.info({ signal: sig }, "shutting down");
        started.close().then(
          () => process.exit(0),
          (err: unknown) => {
            log.error({ err }, "shutdown failed");
            process.exit(1);
          },
        );
      };
      process.once("SIGINT", () => stop("SIGINT"));
      process.once("SIGTERM", () => stop("SIGTERM"));
      process.stdout.write(
        `taskrouter: listening on ${daemon.address} (runtime ${daemon.runtime.name})\n`,
      );
      if (daemon.metricsAddress) {
        process.stdout.write(`taskrouter: metrics on http://${daemon.metricsAddress}/metrics\n`);
      }
      if (daemon.runtime.warning)
        process.stderr.write(`taskrouter: WARNING: ${daemon.runtime.warning}\n`);
      if (daemon.auth === "none") {
        process.stderr.write(
          "taskrouter: WARNING: authentication is off (--auth none): every local user can run commands\n",
        );
      }
      if (daemon.tlsCertFile) {
        process.stdout.write(
          `taskrouter: TLS and cleartext HTTP/2 on the same port; certificate ${daemon.tlsCertFile}\n`,
        );
      }
      if (o.demo) {
        try {
          daemon.tasks.get("demo");
        } catch (err) {
          if (!(err instanceof TaskRouterError)) throw err;
          await daemon.tasks.create("demo");
        }
        const server = daemon.address === DEFAULT_SERVER ? "" : ` --server ${daemon.address}`;
        const token = daemon.signingKey
          ? await issueToken(daemon.signingKey, { task: "demo" }, DEMO_TOKEN_TTL_MS, {
              audience: o.jwtAudience,
            })
          : undefined;
        const env = token ? `TASKROUTER_TOKEN=${token} ` : "";
        process.stdout.write(
          `taskrouter: demo task ready; try:\n  ${env}npx taskrouter${server} exec demo -- uname -a\n`,
        );
        if (token) {
          const dir = o.dataDir === d.dataDir ? "" : ` --data-dir ${o.dataDir}`;
          process.stdout.write(
            `taskrouter: (that token reaches task demo for 24h; an admin token: npx taskrouter token issue --admin${dir})\n`,
          );
        }
      }
    });
}
