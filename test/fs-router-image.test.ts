import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { tarDirectory } from "../src/cli/tar-dir.ts";
import { TasksClient } from "../src/client/admin.ts";
import { ImagesAdminClient } from "../src/client/images.ts";
import { type Entry, fails, ok, okJson, SdkFs, VARIANTS, variantSkip } from "./helpers/fs-sdk.ts";
import type { TestRouter } from "./helpers/router.ts";
import { startRuncRouter } from "./helpers/runc.ts";
import { WireClient } from "./helpers/wire-client.ts";

/**
 * The helper needs nothing from the image (../shared/FS-TOOLS.md §1): a runc
 * task whose root image holds one file only, /bin/sh, a static program that
 * sleeps forever (no libc, no shell, no /etc), serves ListFiles, Stat,
 * WriteFile and ReadFile through the router, the SDK way. With every OCI
 * runtime of the runc runtime.
 */

const run = promisify(execFile);
const SLEEPER_C = "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n";

/** Why a static C program cannot be built here, or undefined. */
async function ccSkipReason(): Promise<string | undefined> {
  try {
    await run("cc", ["--version"]);
    return undefined;
  } catch (err) {
    const why = `no C compiler (cc) to build the image's static /bin/sh: ${(err as Error).message}`;
    process.stdout.write(`# ${why}\n`);
    return why;
  }
}

for (const v of VARIANTS.filter((x) => x.oci !== undefined)) {
  const skip = (await variantSkip(v)) ?? (await ccSkipReason());
  describe(`fs helper in a runc task whose image has no libc or shell (${v.label})`, {
    skip,
  }, () => {
    let r: TestRouter | undefined;
    let wire: WireClient | undefined;
    let scratch: string | undefined;
    let image: string;
    let fs: SdkFs;
    let sleeperSize: number;

    before(async () => {
      scratch = await mkdtemp(join(tmpdir(), "fs-router-image-"));
      const src = join(scratch, "sleeper.c");
      const tree = join(scratch, "tree");
      await writeFile(src, SLEEPER_C);
      await mkdir(join(tree, "bin"), { recursive: true });
      await run("cc", ["-static", "-O2", "-o", join(tree, "bin", "sh"), src]);
      await chmod(join(tree, "bin", "sh"), 0o755);
      sleeperSize = (await stat(join(tree, "bin", "sh"))).size;
      // Its only file is /bin/sh (and the directory holding it).
      assert.deepEqual(await readdir(tree), ["bin"]);
      assert.deepEqual(await readdir(join(tree, "bin")), ["sh"]);

      r = await startRuncRouter({ ociRuntime: v.oci as string });
      image = await new ImagesAdminClient(r.client).import(tarDirectory(tree), {
        format: "tree",
        source: "fs-router test",
      });
      const t = await new TasksClient(r.client).create("", { runtime: "runc", image });
      wire = new WireClient(r.address);
      fs = new SdkFs(wire, t.taskId);
    });
    after(async () => {
      wire?.close();
      try {
        await r?.close();
      } finally {
        if (scratch) await rm(scratch, { recursive: true, force: true });
      }
    });

    it("ListFiles, Stat, WriteFile and ReadFile work with nothing from the image", async () => {
      const root = okJson<Entry[]>(await fs.run({ ListFiles: { path: "/" } }));
      const names = root.map((e) => e.name);
      assert.ok(names.includes("bin") && names.includes("__modal"), names.join(" "));
      for (const absent of ["lib", "lib64", "usr", "etc"]) {
        assert.ok(!names.includes(absent), `/${absent} in the image root: ${names.join(" ")}`);
      }
      fails(await fs.run({ ListFiles: { path: "/lib" } }), "NotFound", "/lib");
      const bin = okJson<Entry[]>(await fs.run({ ListFiles: { path: "/bin" } }));
      assert.deepEqual(
        bin.map((e) => [e.name, e.path, e.type, e.size]),
        [["sh", "/bin/sh", "file", sleeperSize]],
      );
      const sh = okJson<Entry>(await fs.run({ Stat: { path: "/bin/sh" } }));
      assert.deepEqual(
        [sh.name, sh.type, sh.size, sh.permissions],
        ["sh", "file", sleeperSize, "0755"],
      );
      // No /etc/passwd or /etc/group: ids are named by their numbers.
      assert.deepEqual([sh.owner, sh.group], ["0", "0"]);

      const data = Buffer.concat([
        Buffer.from([0, 255, 10]),
        createHash("sha256").update("x").digest(),
      ]);
      const w = await fs.writeFile("/data/nested/file.bin", data);
      assert.equal(ok(w).length, 0);
      assert.deepEqual(ok(await fs.run({ ReadFile: { path: "/data/nested/file.bin" } })), data);
      const st = okJson<Entry>(await fs.run({ Stat: { path: "/data/nested/file.bin" } }));
      assert.deepEqual([st.type, st.size, st.owner], ["file", data.length, "0"]);
      assert.deepEqual(
        okJson<Entry[]>(await fs.run({ ListFiles: { path: "/data/nested" } })).map((e) => e.name),
        ["file.bin"],
      );
      fails(await fs.run({ ReadFile: { path: "/data" } }), "IsDirectory", "/data");
    });
  });
}
