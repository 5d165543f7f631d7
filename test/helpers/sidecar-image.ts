import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { tarDirectory } from "../../src/cli/tar-dir.ts";
import { ImagesAdminClient } from "../../src/client/images.ts";
import { copyProgram, scratch } from "./images.ts";
import type { TestRouter } from "./router.ts";
import { startRuncRouter } from "./runc.ts";
import { STDERR, STDOUT, WireClient } from "./wire-client.ts";

const run = promisify(execFile);

/** What the sidecar image's TCP server writes to every connection. */
export const SERVER_REPLY = "hello from the sidecar\n";

/** A tiny TCP server: listens on 127.0.0.1:PORT (argv[1]), writes SERVER_REPLY to each connection. */
const SERVER_C = `
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons(atoi(argc > 1 ? argv[1] : "7300"));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) return 2;
  for (;;) {
    int c = accept(s, 0, 0);
    if (c < 0) continue;
    const char *m = ${JSON.stringify(SERVER_REPLY)};
    write(c, m, strlen(m));
    close(c);
  }
}
`;

/**
 * The root of a sidecar image in `dir`: /bin/sh (dash), cat and sleep with
 * their libraries, /srv/server (the TCP server above, built static with the
 * C compiler `npm ci` needs anyway), /etc/marker ("sidecar image"), /tmp.
 */
export async function makeSidecarImage(dir: string): Promise<void> {
  await copyProgram(dir, "/bin/dash", "/bin/sh");
  await copyProgram(dir, "/bin/cat", "/bin/cat");
  await copyProgram(dir, "/bin/sleep", "/bin/sleep");
  await mkdir(join(dir, "srv"), { recursive: true });
  await writeFile(join(dir, "srv", "server.c"), SERVER_C);
  await run("cc", [
    "-static",
    "-O2",
    "-o",
    join(dir, "srv", "server"),
    join(dir, "srv", "server.c"),
  ]);
  await mkdir(join(dir, "etc"), { recursive: true });
  await writeFile(join(dir, "etc", "marker"), "sidecar image\n");
  await mkdir(join(dir, "tmp"));
  await chmod(join(dir, "tmp"), 0o1777);
  await mkdir(join(dir, "mnt"));
}

/** A runc router (OCI runtime `binary`) with the sidecar image imported and one task. */
export interface SidecarSuite {
  r: TestRouter;
  w: WireClient;
  s: Awaited<ReturnType<typeof scratch>>;
  image: string;
  task: string;
  /** TaskContainerCreate in `task` with `image` unless `req` says otherwise. */
  create(req: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** Runs argv in the task (in `container_id` when given): exit and stdout+stderr. */
  execIn(argv: string[], container_id?: string): Promise<{ exit: unknown; out: string }>;
  waitResult(container_id: string, timeout: number): Promise<Record<string, unknown>>;
  /** Ends the router (tasks, containers, mounts) and removes the scratch dir. */
  close(): Promise<void>;
}

export async function startSidecarSuite(binary: string): Promise<SidecarSuite> {
  const s = await scratch();
  let r: TestRouter | undefined;
  let w: WireClient | undefined;
  let image: string;
  let task: string;
  try {
    r = await startRuncRouter({ ociRuntime: binary });
    w = new WireClient(r.address);
    const tree = join(s.dir, "tree");
    await makeSidecarImage(tree);
    const admin = new ImagesAdminClient(r.client);
    image = await admin.import(tarDirectory(tree), { format: "tree", source: "test" });
    task = await r.newTask();
  } catch (err) {
    // The suite's after() gets nothing to close: end what was started here.
    w?.close();
    await r?.close();
    await s.cleanup();
    throw err;
  }
  return suite(r, w, s, image, task);
}

function suite(
  r: TestRouter,
  w: WireClient,
  s: Awaited<ReturnType<typeof scratch>>,
  image: string,
  task: string,
): SidecarSuite {
  return {
    r,
    w,
    s,
    image,
    task,
    create: (req) => w.unary("TaskContainerCreate", { task_id: task, image_id: image, ...req }),
    execIn: async (argv, container_id = "") => {
      const exec_id = randomUUID();
      const req = { task_id: task, exec_id, command_args: argv, container_id };
      await w.start({ ...req, stdout_config: STDOUT.PIPE, stderr_config: STDERR.STDOUT } as never);
      const exit = await w.wait(task, exec_id);
      const out = await w.readAll({ task_id: task, exec_id, offset: 0, file_descriptor: 0 });
      return { exit, out: out.data.toString() };
    },
    waitResult: (container_id, timeout) =>
      w.unary("TaskContainerWait", { task_id: task, container_id, timeout }),
    close: async () => {
      w.close();
      await r.close();
      await s.cleanup();
    },
  };
}
