import { accessSync, constants, statSync } from "node:fs";
import { isAbsolute, join } from "node:path";

/**
 * The absolute path of program `name` (a name looked up in `path`, as a shell
 * does, or a path returned as it is), or undefined when no executable file
 * of that name is on `path`. Resolved once, a program starts without the
 * failed execve of every PATH entry before its own.
 */
export function findProgram(name: string, path = process.env.PATH ?? ""): string | undefined {
  if (name.includes("/")) return name;
  for (const dir of path.split(":")) {
    if (!isAbsolute(dir)) continue;
    const file = join(dir, name);
    try {
      if (!statSync(file).isFile()) continue;
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}
