import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { ImagesAdminClient, TaskImagesClient } from "../src/client/images.ts";
import { makeTree, overlaySkipReason, rejectsKind, taskScratch } from "./helpers/images.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { tarOf } from "./helpers/tar.ts";
import { readTree } from "./helpers/tree.ts";

const skip = overlaySkipReason();
const run = promisify(execFile);

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function* chunksOf(b: Buffer): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < b.length; i += 64 * 1024) yield b.subarray(i, i + 64 * 1024);
}

/** Two layers: the second deletes a file (whiteout), empties a directory (opaque), changes a file. */
async function layers(): Promise<[Buffer, Buffer]> {
  const l1 = await tarOf([
    { name: "a/", type: "directory" },
    { name: "a/b/", type: "directory", mode: 0o700 },
    { name: "a/keep", body: "v1\n" },
    { name: "a/gone", body: "bye\n", mode: 0o600 },
    { name: "a/b/inner", body: "inner\n" },
    { name: "opq/", type: "directory" },
    { name: "opq/old", body: "old\n" },
    { name: "a/hard", type: "link", linkname: "a/keep" },
    { name: "s", type: "symlink", linkname: "a/keep" },
    { name: "fifo", type: "fifo" },
  ]);
  const l2 = await tarOf([
    { name: "a/.wh.gone", body: "" },
    { name: "opq/.wh..wh..opq", body: "" },
    { name: "opq/new", body: "new\n" },
    { name: "a/keep", body: "v2\n", mode: 0o640 },
    { name: "c", body: "c\n" },
  ]);
  return [l1, gzipSync(l2)];
}

function expectLayered(
  tree: Record<string, { type: string; mode: number; sha?: string; target?: string }>,
) {
  assert.deepEqual(Object.keys(tree).sort(), [
    ".",
    "a",
    "a/b",
    "a/b/inner",
    "a/hard",
    "a/keep",
    "c",
    "opq",
    "opq/new",
    "s",
  ]);
  assert.equal(tree["a/keep"]?.sha, sha(Buffer.from("v2\n")));
  assert.equal(tree["a/keep"]?.mode, 0o640);
  assert.equal(tree["a/hard"]?.sha, sha(Buffer.from("v1\n"))); // a hard link is its own file
  assert.equal(tree["a/b"]?.mode, 0o700);
  assert.equal(tree.s?.type, "symlink");
  assert.equal(tree.s?.target, "a/keep");
}

describe("image import and export (OCI interchange)", { skip }, () => {
  let r: TestRouter;
  let admin: ImagesAdminClient;
  let images: TaskImagesClient;
  let task: string;
  let s: Awaited<ReturnType<typeof taskScratch>>;

  before(async () => {
    r = await startRouter();
    admin = new ImagesAdminClient(r.client);
    images = new TaskImagesClient(r.client);
    task = await r.newTask();
    s = await taskScratch(r.dataDir, task); // a host task's image calls stay in its directory
  });
  after(async () => {
    await s?.cleanup();
    await r?.close();
  });

  async function mounted(id: string, name: string) {
    const dst = join(s.dir, name);
    await images.mount(task, dst, id);
    try {
      return await readTree(dst);
    } finally {
      await images.unmount(task, dst);
    }
  }

  it("imports a docker save archive: layers in order, whiteouts and opaque dirs applied", async () => {
    const [l1, l2] = await layers();
    const layersList = ["l1/layer.tar", "l2/layer.tar"];
    const archive = await tarOf([
      { name: "manifest.json", body: JSON.stringify([{ Config: "cfg.json", Layers: layersList }]) },
      { name: "cfg.json", body: "{}" },
      { name: "l1/layer.tar", body: l1 },
      { name: "l2/layer.tar", body: l2 },
    ]);
    const id = await admin.import(chunksOf(archive), { format: "archive" });
    expectLayered(await mounted(id, "docker"));
  });

  it("imports an OCI image layout archive and verifies layer digests", async () => {
    const [l1, l2] = await layers();
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        layers: [
          {
            mediaType: "application/vnd.oci.image.layer.v1.tar",
            digest: `sha256:${sha(l1)}`,
            size: l1.length,
          },
          {
            mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
            digest: `sha256:${sha(l2)}`,
            size: l2.length,
          },
        ],
      }),
    );
    const index = JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: `sha256:${sha(manifest)}`,
        },
      ],
    });
    const build = (layer2: Buffer) =>
      tarOf([
        { name: "oci-layout", body: '{"imageLayoutVersion":"1.0.0"}' },
        { name: "index.json", body: index },
        { name: `blobs/sha256/${sha(manifest)}`, body: manifest },
        { name: `blobs/sha256/${sha(l1)}`, body: l1 },
        { name: `blobs/sha256/${sha(l2)}`, body: layer2 },
      ]);
    const id = await admin.import(chunksOf(await build(l2)), { format: "archive" });
    expectLayered(await mounted(id, "oci"));
    const bad = Buffer.from(l2);
    bad.writeUInt8(bad.readUInt8(bad.length - 1) ^ 0xff, bad.length - 1);
    const badArchive = await build(bad);
    await rejectsKind(
      () => admin.import(chunksOf(badArchive), { format: "archive" }),
      "InvalidArgument",
      /digest/,
    );
    await rejectsKind(
      () => admin.import(chunksOf(Buffer.from("not a tar at all")), { format: "archive" }),
      "InvalidArgument",
    );
  });

  it("CLI: import a directory, ls, inspect, export (skopeo accepts it), re-import, rm, gc", async () => {
    const { runCli } = await import("./helpers/cli-run.ts");
    const cli = (...args: string[]) => runCli(["--server", r.address, ...args]);
    const src = join(s.dir, "cli-src");
    await makeTree(src);
    const imp = await cli("image", "import", src, "--ttl", "-1");
    assert.equal(imp.code, 0, imp.stderr);
    const id = imp.stdout.trim();
    assert.match(id, /^im-[0-9a-f]{32}$/);
    const want = await readTree(src);
    assert.deepEqual(await mounted(id, "cli-mnt"), want);

    const ls = await cli("image", "ls");
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, new RegExp(`^${id}\\s.*never`, "m"));
    const q = await cli("image", "ls", "-q");
    assert.ok(q.stdout.split("\n").includes(id));
    const insp = await cli("image", "inspect", id, "--files");
    assert.equal(insp.code, 0, insp.stderr);
    const doc = JSON.parse(insp.stdout) as { id: string; files: number; tree: { path: string }[] };
    assert.equal(doc.id, id);
    assert.equal(doc.files, Object.values(want).filter((e) => e.type === "file").length);
    assert.ok(doc.tree.some((e) => e.path === "sub/deep/deeper/leaf"));

    const out = join(s.dir, "export.tar");
    const exp = await cli("image", "export", id, "-o", out);
    assert.equal(exp.code, 0, exp.stderr);
    const skopeo = await run("skopeo", ["--version"]).then(
      () => true,
      () => false,
    );
    if (skopeo) {
      const { stdout } = await run("skopeo", ["inspect", `oci-archive:${out}`]);
      const info = JSON.parse(stdout) as { Layers: string[]; Os: string };
      assert.equal(info.Layers.length, 1);
      assert.equal(info.Os, "linux");
    } else {
      process.stdout.write("# skopeo check skipped: skopeo is not installed\n");
    }
    const again = await cli("image", "import", out);
    assert.equal(again.code, 0, again.stderr);
    const back = await mounted(again.stdout.trim(), "cli-back");
    assert.deepEqual(back, want);
    // The same export unpacked: an OCI image layout directory.
    const layout = join(s.dir, "layout");
    await mkdir(layout);
    await run("tar", ["-xf", out, "-C", layout]);
    const fromDir = await cli("image", "import", layout);
    assert.equal(fromDir.code, 0, fromDir.stderr);
    assert.equal(fromDir.stdout.trim(), again.stdout.trim());

    await rejectsKind(() => admin.inspect("im-0123456789abcdef0123456789abcdef"), "NotFound");
    const rm = await cli("image", "rm", id);
    assert.equal(rm.code, 0, rm.stderr);
    const rm2 = await cli("image", "rm", id);
    assert.equal(rm2.code, 125);
    assert.match(rm2.stderr, /NotFound/);
    const gc = await cli("image", "gc");
    assert.equal(gc.code, 0, gc.stderr);
    assert.match(gc.stdout, /blob\(s\) removed/);
  });

  it("export then import of an image gives back its tree (via the API)", async () => {
    const src = join(s.dir, "rt");
    await mkdir(src);
    await writeFile(join(src, "f"), "x".repeat(100_000));
    await makeTree(join(src, "t"));
    const id = await images.snapshotDirectory(task, src);
    const exp = await admin.export(id);
    const parts: Buffer[] = [];
    for await (const c of exp.chunks) parts.push(c);
    const archive = Buffer.concat(parts);
    assert.equal(archive.length, exp.totalBytes);
    const back = await admin.import(chunksOf(archive), { format: "archive" });
    assert.deepEqual(await mounted(back, "rt-back"), await readTree(src));
    assert.equal((await readFile(join(src, "f"))).length, 100_000);
  });
});
