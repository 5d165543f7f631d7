/**
 * Building an image tree from tar layers (TreeBuilder, used by ImportImage
 * and registry pulls) gives the tree the layers define, however the
 * entries replace each other: a path that turns from a file into a directory
 * and back, whiteouts and opaque directories, entries of lower layers and of
 * the same one. Compared on random layers with the plain definition (every
 * removal a scan of the whole tree), and on a hostile layer of 100,000 such
 * replacements over 50,000 other entries, which the scan made O(n²) (about
 * 10^10 steps: it never finished; now it takes a second or two).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { type Header, pack } from "tar-stream";
import { BlobStore } from "../src/images/blob-store.ts";
import { TreeBuilder } from "../src/images/layers.ts";
import type { Entry } from "../src/images/manifest.ts";

type Item = { name: string; type: "directory" | "symlink" | "file"; body?: string };

/** A tar of `items` as a stream, produced as it is read (big layers are never held whole). */
function tarStream(items: Iterable<Item>): Readable {
  const p = pack();
  void (async () => {
    let n = 0;
    for (const it of items) {
      const h: Partial<Header> & { name: string } = {
        name: it.name,
        type: it.type,
        mode: 0o755,
        mtime: new Date(0),
      };
      if (it.type === "symlink") h.linkname = "t";
      if (it.type === "file") p.entry({ ...h, mode: 0o644 }, it.body ?? "");
      else p.entry(h);
      // Let the reader drain what is packed, so memory stays flat.
      if (++n % 512 === 0) await new Promise((r) => setImmediate(r));
    }
    p.finalize();
  })();
  return p as unknown as Readable;
}

/** The tree as `[path, type]` pairs, in canonical order. */
function shape(entries: Entry[]): string[] {
  return entries.map((e) => `${e.path}:${e.type}${e.type === "file" ? `:${e.size}` : ""}`);
}

/**
 * The plain definition of applying layers (what TreeBuilder did before it
 * kept an index: each removal scans every path), on `[path, type]` only.
 */
class Reference {
  readonly tree = new Map<string, string>([["", "dir"]]);

  apply(items: Item[]): void {
    const added = new Set<string>();
    const within = (p: string, d: string) => d === "" || p === d || p.startsWith(`${d}/`);
    const parent = (p: string) => (p.includes("/") ? p.slice(0, p.lastIndexOf("/")) : "");
    const remove = (d: string, keep: Set<string>, self: boolean) => {
      for (const p of [...this.tree.keys()]) {
        if (p !== "" && !keep.has(p) && within(p, d) && (self || p !== d)) this.tree.delete(p);
      }
    };
    for (const it of items) {
      const path = it.name.replace(/\/$/, "");
      const base = path.slice(path.lastIndexOf("/") + 1);
      if (base.startsWith(".wh.")) {
        if (base === ".wh..wh..opq") remove(parent(path), added, false);
        else remove(`${parent(path) ? `${parent(path)}/` : ""}${base.slice(4)}`, added, true);
        continue;
      }
      const type = it.type === "directory" ? "dir" : it.type;
      const value = type === "file" ? `file:${(it.body ?? "").length}` : type;
      const chain: string[] = [];
      for (let p = parent(path); ; p = parent(p)) {
        const cur = this.tree.get(p);
        if (cur === "dir") break;
        if (cur) remove(p, new Set(), true);
        chain.push(p);
      }
      for (const d of chain.reverse()) {
        this.tree.set(d, "dir");
        added.add(d);
      }
      if (this.tree.get(path) === "dir" && type !== "dir") remove(path, new Set(), true);
      this.tree.set(path, value);
      added.add(path);
    }
  }

  shape(): string[] {
    const bytes = (s: string) => Buffer.from(s, "latin1");
    return [...this.tree.entries()]
      .sort(([a], [b]) =>
        Buffer.compare(bytes(a.replaceAll("/", "\0")), bytes(b.replaceAll("/", "\0"))),
      )
      .map(([p, v]) => `${p}:${v}`);
  }
}

/** A small deterministic random source (so a failure can be replayed from its seed). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe("image layers: the tree TreeBuilder builds", () => {
  let dir: string;
  let blobs: BlobStore;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskrouter-layers-"));
    blobs = new BlobStore(dir, join(dir, "tmp"));
    await blobs.init();
    await import("node:fs/promises").then((fs) => fs.mkdir(join(dir, "tmp")));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function build(layers: Item[][]): Promise<Entry[]> {
    const tree = new TreeBuilder();
    const batch = blobs.batch();
    try {
      for (const l of layers) await tree.apply(tarStream(l), batch, { whiteouts: true });
    } finally {
      await batch.abort();
    }
    return tree.manifest().entries;
  }

  it("matches the plain definition on random layers (replacements, whiteouts, opaque dirs)", async () => {
    const names = ["a", "a/b", "a/b/c", "a/d", "e", "e/f", "a/.wh.b", ".wh.a", "a/.wh..wh..opq"];
    names.push("e/.wh.f", ".wh.e", "e/.wh..wh..opq", ".wh..wh..opq", "a/b/.wh.c");
    const types = ["directory", "symlink", "file"] as const;
    for (let seed = 1; seed <= 300; seed++) {
      const rand = rng(seed);
      const layers: Item[][] = [];
      for (let l = 0; l < 3; l++) {
        const items: Item[] = [];
        for (let i = Math.floor(rand() * 10); i > 0; i--) {
          const name = names[Math.floor(rand() * names.length)] as string;
          const type = name.includes(".wh.") ? "file" : types[Math.floor(rand() * 3)];
          items.push({ name, type: type ?? "file", body: "x".repeat(l + 1) });
        }
        layers.push(items);
      }
      const ref = new Reference();
      for (const l of layers) ref.apply(l);
      assert.deepEqual(shape(await build(layers)), ref.shape(), `seed ${seed}`);
    }
  });

  // Sized for CI time: at five times this size the old O(n²) build ran past 10 minutes.
  it("a layer alternating x and x/y 20,000 times over 10,000 entries, then 5,000 whiteouts", async () => {
    const N = 10_000;
    const M = 20_000;
    function* lower(): Generator<Item> {
      yield { name: "d/", type: "directory" };
      for (let i = 0; i < N; i++) yield { name: `d/${i}/`, type: "directory" };
      for (let i = 0; i < M; i++) {
        // A symlink x, then a directory x/y: x becomes a directory, then a symlink again...
        yield i % 2 === 0 ? { name: "x", type: "symlink" } : { name: "x/y/", type: "directory" };
      }
    }
    function* upper(): Generator<Item> {
      for (let i = 0; i < N; i += 2) yield { name: `d/.wh.${i}`, type: "file" };
      // The same directory emptied again and again: once is enough.
      for (let i = 0; i < M / 4; i++) yield { name: "x/.wh..wh..opq", type: "file" };
      yield { name: "x/z", type: "file", body: "z" };
    }
    const tree = new TreeBuilder();
    const batch = blobs.batch();
    try {
      await tree.apply(tarStream(lower()), batch, { whiteouts: true });
      await tree.apply(tarStream(upper()), batch, { whiteouts: true });
    } finally {
      await batch.abort();
    }
    const got = shape(tree.manifest().entries);
    const odd = Array.from({ length: N / 2 }, (_, k) => String(2 * k + 1));
    const want = [
      ":dir",
      "d:dir",
      ...odd
        .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
        .map((i) => `d/${i}:dir`),
      "x:dir",
      "x/z:file:1",
    ];
    assert.equal(got.length, want.length);
    assert.deepEqual(got, want);
  });

  it("refuses an entry whose path is longer than any image path (4095 bytes)", async () => {
    const deep = `${"a/".repeat(2500)}f`; // 5001 bytes: its depth would cost its square below
    const tree = new TreeBuilder();
    const batch = blobs.batch();
    try {
      await assert.rejects(
        tree.apply(tarStream([{ name: deep, type: "file", body: "x" }]), batch, {
          whiteouts: true,
        }),
        (err: Error) => err.name === "InvalidArgumentError" && /over 4095 bytes/.test(err.message),
      );
    } finally {
      await batch.abort();
    }
    assert.deepEqual(
      tree.manifest().entries.filter((e) => e.path !== ""),
      [],
      "nothing but the root",
    );
  });
});
