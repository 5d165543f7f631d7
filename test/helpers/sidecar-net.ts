/**
 * Helpers of test/sidecar-network.test.ts: a static TCP client/server for
 * the sidecar image, a runc daemon that can restart on its data dir, the
 * host table's allowlist, and why the tests cannot run here.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, realpath, writeFile } from "node:fs/promises";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { tarDirectory } from "../../src/cli/tar-dir.ts";
import { TasksClient } from "../../src/client/admin.ts";
import { RouterClient } from "../../src/client/client.ts";
import { ImagesAdminClient } from "../../src/client/images.ts";
import type { Daemon } from "../../src/daemon.ts";
import { hostTables, netToolsMissing } from "./net.ts";
import { initPid, runcSkipReason, startRuncDaemon } from "./runc.ts";
import { makeSidecarImage } from "./sidecar-image.ts";
import { STDERR, STDOUT, WireClient } from "./wire-client.ts";

const run = promisify(execFile);

/**
 * A static TCP client for the sidecar image: `connect HOST PORT` prints
 * "connected" (exit 0) or the error (exit 4); `connect HOST PORT hold`
 * stays connected, printing what it reads, until a line with "bye" (exit 0)
 * or a socket error ("error CODE", exit 3); `connect listen PORT` serves
 * "from the sidecar" to every connection on 0.0.0.0:PORT.
 */
const CONNECT_C = `
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
static const char *code(int e) {
  return e == ECONNREFUSED ? "ECONNREFUSED" : e == ECONNRESET ? "ECONNRESET"
       : e == EPIPE ? "EPIPE" : e == EHOSTUNREACH ? "EHOSTUNREACH" : strerror(e);
}
int main(int argc, char **argv) {
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons(atoi(argv[2]));
  if (!strcmp(argv[1], "listen")) {
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) return 2;
    for (;;) {
      int c = accept(s, 0, 0);
      if (c < 0) continue;
      if (write(c, "from the sidecar\\n", 17) != 17) return 6;
      close(c);
    }
  }
  inet_pton(AF_INET, argv[1], &a.sin_addr);
  if (connect(s, (struct sockaddr *)&a, sizeof a)) { printf("%s\\n", code(errno)); return 4; }
  printf("connected\\n");
  fflush(stdout);
  if (argc < 4) return 0;
  if (write(s, "side\\n", 5) != 5) { printf("error %s\\n", code(errno)); return 3; }
  char buf[512];
  for (;;) {
    ssize_t n = read(s, buf, sizeof buf - 1);
    if (n < 0) { printf("error %s\\n", code(errno)); return 3; }
    if (n == 0) { printf("eof\\n"); return 5; }
    buf[n] = 0;
    fputs(buf, stdout);
    fflush(stdout);
    if (strstr(buf, "bye")) return 0;
  }
}
`;

/** This machine's first non-loopback IPv4 address that is no task's (B). */
export function ownAddress(): string | undefined {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.family === "IPv4" && !a.internal && !a.address.startsWith("10.213.")) return a.address;
    }
  }
  return undefined;
}

/** Why these tests cannot run here, or undefined. */
export async function skipReason(binary: string): Promise<string | undefined> {
  const why =
    (await runcSkipReason(binary)) ??
    (await netToolsMissing()) ??
    (existsSync("/sys/fs/cgroup/cgroup.controllers") ||
    existsSync("/sys/fs/cgroup/unified/cgroup.controllers")
      ? undefined
      : "no cgroup2 hierarchy (sockets carry no cgroup2 cgroup)") ??
    (ownAddress() ? undefined : "this machine has no non-loopback IPv4 address");
  if (why) process.stdout.write(`# sidecar network tests (${binary}) skipped: ${why}\n`);
  return why;
}

/** A runc daemon on a data dir of the test's (so it can restart), and its clients. */
export class Router {
  d!: Daemon;
  w!: WireClient;
  client!: RouterClient;
  tasks!: TasksClient;
  constructor(
    readonly dataDir: string,
    readonly binary: string,
  ) {}

  async start(): Promise<void> {
    this.d = await startRuncDaemon(this.dataDir, this.binary);
    this.client = new RouterClient(this.d.address);
    this.tasks = new TasksClient(this.client);
    this.w = new WireClient(this.d.address);
  }

  async stop(): Promise<void> {
    this.w?.close();
    this.client?.close();
    await this.d?.close();
  }

  /** Runs argv in `task` (in sidecar `container_id` when given): exit and stdout+stderr. */
  async exec(task: string, argv: string[], container_id = "") {
    const exec_id = randomUUID();
    const req = { task_id: task, exec_id, command_args: argv, container_id };
    await this.w.start({
      ...req,
      stdout_config: STDOUT.PIPE,
      stderr_config: STDERR.STDOUT,
    } as never);
    const exit = await this.w.wait(task, exec_id);
    const out = await this.w.readAll({ task_id: task, exec_id, offset: 0, file_descriptor: 0 });
    return { exit, out: out.data.toString().trim() };
  }

  /** The nftables ruleset of `task`'s network namespace. */
  async netnsRules(task: string): Promise<string> {
    const pid = await initPid({ dataDir: this.dataDir }, task, this.binary);
    const { stdout } = await run("nsenter", [
      `--net=/proc/${pid}/ns/net`,
      "nft",
      "list",
      "ruleset",
    ]);
    return stdout;
  }
}

/** The addresses and blocks of set `allow4` of the host table of the router of `dataDir`, sorted. */
export async function hostAllow(dataDir: string): Promise<string[]> {
  const tag = createHash("sha256")
    .update(await realpath(dataDir))
    .digest("hex")
    .slice(0, 10);
  const mine = (await hostTables()).filter((t) => t.startsWith(`inet tr_${tag}_`));
  assert.equal(mine.length, 1, `one host table of this router: ${mine.join(", ")}`);
  const [, name = ""] = (mine[0] ?? "").split(" ");
  const { stdout } = await run("nft", ["list", "set", "inet", name, "allow4"]);
  const els = /elements = \{([^}]*)\}/.exec(stdout)?.[1] ?? "";
  return els
    .split(",")
    .map((e) => e.trim())
    .filter((e) => e !== "")
    .sort();
}

/** The sidecar image (makeSidecarImage) with /srv/connect (CONNECT_C) in `tree`, imported into `client`'s router. */
export async function importNetImage(client: RouterClient, tree: string): Promise<string> {
  await makeSidecarImage(tree);
  await mkdir(join(tree, "srv"), { recursive: true });
  await writeFile(join(tree, "srv", "connect.c"), CONNECT_C);
  const out = join(tree, "srv", "connect");
  await run("cc", ["-static", "-O2", "-o", out, join(tree, "srv", "connect.c")]);
  return new ImagesAdminClient(client).import(tarDirectory(tree), {
    format: "tree",
    source: "test",
  });
}
