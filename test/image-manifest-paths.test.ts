/**
 * An image's file list is hostile when it comes from a registry (whoever may
 * push chooses it, and its id is only the hash of the list): a manifest whose
 * paths leave the image's root (`..`, empty or `.` components, NUL), repeat,
 * or go through anything but a directory listed before (a symlink `a -> /etc`
 * then `a/passwd`) is refused when decoded, so a pull refuses the image
 * before anything is unpacked as root. Canonical manifests of real trees
 * still decode.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decodeManifest, type Entry, encodeManifest, imageIdOf } from "../src/images/manifest.ts";
import { CONFIG_KEY, parseConfig } from "../src/images/registry/layout.ts";

const DIGEST = `sha256:${"ab".repeat(32)}`;
const base = { mode: 0o755, uid: 0, gid: 0, mtimeNs: 0n, size: 0 };
const dir = (path: string): Entry => ({ ...base, path, type: "dir" });
const file = (path: string): Entry => ({ ...base, path, type: "file", size: 1, digest: DIGEST });
const link = (path: string, target: string): Entry => ({ ...base, path, type: "symlink", target });

/** The canonical bytes of `entries` under a root directory. */
const bytesOf = (entries: Entry[]) => encodeManifest({ entries: [dir(""), ...entries] });

describe("image manifests: paths stay inside the image", () => {
  it("a real tree decodes: nested directories, files, symlinks (any target)", () => {
    const m = decodeManifest(
      bytesOf([dir("etc"), file("etc/passwd"), link("etc/up", "../../.."), dir("etc/x")]),
    );
    assert.deepEqual(
      m.entries.map((e) => e.path),
      ["", "etc", "etc/passwd", "etc/up", "etc/x"],
    );
  });

  const refused: [string, Entry[], RegExp][] = [
    ["a .. component", [file("../x")], /not a plain relative path/],
    ["a .. inside", [dir("a"), file("a/../../x")], /not a plain relative path/],
    ["a . component", [dir("a"), file("a/./x")], /not a plain relative path/],
    ["an empty component", [dir("a"), file("a//x")], /not a plain relative path/],
    ["an absolute path", [file("/etc/passwd")], /not a plain relative path/],
    ["a NUL", [file("a\0b")], /not a plain relative path/],
    ["a file through a symlink", [link("a", "/etc"), file("a/passwd")], /parent is not/],
    ["a file under a file", [file("a"), file("a/b")], /parent is not/],
    ["a parent never listed", [file("a/b")], /parent is not/],
    ["a path twice", [file("a"), link("a", "/etc")], /twice/],
  ];
  for (const [what, entries, why] of refused) {
    it(`refused: ${what}`, () => {
      assert.throws(() => decodeManifest(bytesOf(entries)), why);
    });
  }

  it("a pulled config whose tree hashes to its id but leaves the root: a bad image, nothing made", () => {
    const tree = bytesOf([link("a", "/etc"), file("a/passwd")]);
    const id = imageIdOf(tree);
    const config = Buffer.from(
      JSON.stringify({ [CONFIG_KEY]: { id, tree: tree.toString("utf8"), groups: [1] } }),
    );
    assert.throws(() => parseConfig(config, id, 2, "registry.example/evil:1"), /parent is not/);
  });
});
