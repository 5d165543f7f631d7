import { spawn } from "node:child_process";

/**
 * Runs a system tool (mount(8), umount(8), the native helpers) to completion:
 * stdin and stdout ignored, stderr collected for the error. `fd`, when given,
 * is passed on as the tool's fd 3 (an open directory it works on). Resolves on
 * exit 0; rejects with `<cmd> failed (<code>): <stderr>` otherwise.
 */
export function runTool(
  cmd: string,
  args: string[],
  opts: { cwd?: string; fd?: number } = {},
): Promise<void> {
  return new Promise((resolve, reject) => {
    const stdio: (number | "ignore" | "pipe")[] = ["ignore", "ignore", "pipe"];
    if (opts.fd !== undefined) stdio.push(opts.fd);
    const child = spawn(cmd, args, { cwd: opts.cwd, stdio, env: { PATH: process.env.PATH ?? "" } });
    let err = "";
    child.stderr?.on("data", (d: Buffer) => {
      err += d.toString();
    });
    child.once("error", reject);
    child.once("exit", (code) => {
      if (code === 0) resolve();
      else reject(new Error(`${cmd} failed (${code}): ${err.trim()}`));
    });
  });
}
