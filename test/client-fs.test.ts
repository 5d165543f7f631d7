/**
 * The client's streaming stdin (src/client/stdin-stream.ts: TaskExecStdinWriteStream
 * with the SDK's resume through TaskExecStdinStatus) and the SDK-style filesystem
 * API over the in-task helper (src/client/fs.ts), against a real router (host tasks).
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { RouterClient } from "../src/client/client.ts";
import { FsError, TaskFilesystem } from "../src/client/fs.ts";
import { reader } from "../src/client/stdin-source.ts";
import { fileSource, stdinStatus, writeStdinStream } from "../src/client/stdin-stream.ts";
import { ROOT } from "./helpers/cli-run.ts";
import { startProxy, type TcpProxy } from "./helpers/proxy.ts";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";

const MiB = 1024 * 1024;
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const HELPER = join(ROOT, "build/native/modal-sandbox-fs-tools");
const helperSkip = existsSync(HELPER) ? undefined : `${HELPER} is not built yet`;

describe("client: one-shot stdin sources are replayed from a bounded window", () => {
  const bytes = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
  const drain = async (it: AsyncIterable<Uint8Array>) => {
    const parts: Uint8Array[] = [];
    for await (const c of it) parts.push(c);
    return Buffer.concat(parts);
  };

  it("restarts anywhere in the kept window; before it is OutOfRange", async () => {
    const read = reader(
      (async function* () {
        for (let i = 0; i < 1000; i += 100) yield bytes.subarray(i, i + 100);
      })(),
      250,
    );
    const first = read(0)[Symbol.asyncIterator]();
    for (let i = 0; i < 5; i++) await first.next();
    assert.deepEqual(await drain(read(300)), bytes.subarray(300));
    await assert.rejects(
      drain(read(100)),
      (e: Error & { kind?: string }) => e.kind === "OutOfRange",
    );
  });

  it("an attempt abandoned during a pull loses nothing: the next one gets that chunk", async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((res) => {
      release = res;
    });
    const read = reader(
      (async function* () {
        yield bytes.subarray(0, 100);
        await gate;
        for (let i = 100; i < 1000; i += 100) yield bytes.subarray(i, i + 100);
      })(),
      1 << 20,
    );
    const first = read(0)[Symbol.asyncIterator]();
    await first.next();
    const pending = first.next(); // waits on the gate; then abandoned
    const second = drain(read(50));
    release();
    assert.deepEqual(await second, bytes.subarray(50));
    await pending;
  });
});

describe("client: TaskExecStdinWriteStream", () => {
  let r: TestRouter;
  let task: string;
  let proxy: TcpProxy;
  let viaProxy: RouterClient;
  before(async () => {
    r = await startRouter();
    task = await r.newTask();
    proxy = await startProxy(r.address);
    viaProxy = new RouterClient(proxy.address);
  });
  after(async () => {
    viaProxy?.close();
    await proxy?.close();
    await r?.close();
  });

  /** Starts `sha256sum`; returns its id and a function giving the digest it printed. */
  const hasher = async () => {
    const id = await r.client.start(task, ["sha256sum"], { stdout: "pipe", stderr: "pipe" });
    return {
      id,
      digest: async () => {
        assert.deepEqual(await r.client.wait(task, id), { code: 0 });
        return (await collect(r.client.read(task, id, "stdout"))).toString().split(" ")[0];
      },
    };
  };

  it("streams bytes, a function source and a one-shot source, then closes stdin", async () => {
    const data = randomBytes(3 * MiB + 17);
    for (const source of [
      data,
      (offset: number) =>
        (async function* () {
          for (let i = offset; i < data.length; i += 100_000) yield data.subarray(i, i + 100_000);
        })(),
      (async function* () {
        for (let i = 0; i < data.length; i += 1 * MiB) yield data.subarray(i, i + MiB);
      })(),
    ]) {
      const h = await hasher();
      assert.equal(await writeStdinStream(r.client, task, h.id, source), data.length);
      assert.deepEqual(await stdinStatus(r.client, task, h.id), {
        written: data.length,
        closed: true,
      });
      assert.equal(await h.digest(), sha(data));
    }
  });

  it("an empty source sends start and end only: stdin is closed", async () => {
    const h = await hasher();
    assert.equal(await writeStdinStream(r.client, task, h.id, new Uint8Array()), 0);
    assert.equal(await h.digest(), sha(new Uint8Array()));
  });

  for (const kind of ["seekable", "one-shot", "file (pooled chunks)"] as const) {
    it(`resumes a ${kind} source across cut connections: every byte exactly once`, async (t) => {
      const data = randomBytes(40 * MiB);
      const h = await hasher();
      const resumes: number[] = [];
      const file = async () => {
        const dir = await mkdtemp(join(tmpdir(), "taskrouter-client-fs-"));
        t.after(() => rm(dir, { recursive: true, force: true }));
        await writeFile(join(dir, "src.bin"), data);
        return fileSource(join(dir, "src.bin"));
      };
      const source =
        kind === "seekable"
          ? {
              readFrom: async function* (o: number) {
                yield data.subarray(o);
              },
            }
          : kind === "file (pooled chunks)"
            ? await file()
            : (async function* () {
                for (let i = 0; i < data.length; i += MiB) yield data.subarray(i, i + MiB);
              })();
      const stop = proxy.cutEveryUp(12 * MiB);
      try {
        // The proxy cuts by bytes, also during a resume's own calls: allow more than the SDK's 9.
        const n = await writeStdinStream(viaProxy, task, h.id, source, {
          maxResumes: 100,
          onResume: (offset) => resumes.push(offset),
        });
        assert.equal(n, data.length);
      } finally {
        stop();
      }
      assert.ok(resumes.length >= 1, "the stream was cut at least once");
      for (let i = 1; i < resumes.length; i++)
        assert.ok((resumes[i] ?? 0) >= (resumes[i - 1] ?? 0));
      assert.equal(await h.digest(), sha(data));
    });
  }

  it("a failing source ends the call without `end`: stdin stays open with what was sent", async () => {
    const h = await hasher();
    const boom = new Error("local read failed");
    const source = (async function* () {
      yield Buffer.from("abc");
      throw boom;
    })();
    await assert.rejects(writeStdinStream(r.client, task, h.id, source), (err) => err === boom);
    const st = await stdinStatus(r.client, task, h.id);
    assert.equal(st.closed, false);
    await r.client.writeStdin(
      task,
      h.id,
      st.written,
      Buffer.from("abc").subarray(st.written),
      true,
    );
    assert.equal(await h.digest(), sha(Buffer.from("abc")));
  });

  it("an abort cancels the upload (CancelledError) and leaves stdin open", async () => {
    const h = await hasher();
    const ac = new AbortController();
    const source = (async function* () {
      yield Buffer.alloc(MiB, 1);
      ac.abort();
      yield Buffer.alloc(MiB, 2);
    })();
    await assert.rejects(
      writeStdinStream(r.client, task, h.id, source, { signal: ac.signal }),
      (err: Error) => err.name === "CancelledError",
    );
    assert.equal((await stdinStatus(r.client, task, h.id)).closed, false);
    await r.client.writeStdin(task, h.id, 0, new Uint8Array(), true);
    await h.digest();
  });

  it("writing to a process that exited fails with FailedPrecondition once the exit is visible", async () => {
    const id = await r.client.start(task, ["true"], { stdout: "pipe", stderr: "pipe" });
    await r.client.wait(task, id);
    await assert.rejects(
      writeStdinStream(r.client, task, id, Buffer.alloc(4 * MiB)),
      (err: Error & { kind?: string }) => err.kind === "FailedPrecondition",
    );
    assert.notEqual(await r.client.poll(task, id), undefined);
  });
});

describe("client: TaskFilesystem (SDK-style, over the helper)", { skip: helperSkip }, () => {
  let r: TestRouter;
  let fs: TaskFilesystem;
  let dir: string;
  before(async () => {
    r = await startRouter();
    fs = new TaskFilesystem(r.client, await r.newTask());
    dir = `/tmp/taskrouter-fs-${randomBytes(4).toString("hex")}`;
  });
  after(async () => {
    await fs?.remove(dir, { recursive: true }).catch(() => {});
    await r?.close();
  });

  it("writes, stats, lists, reads back and removes", async () => {
    const data = randomBytes(5 * MiB + 3);
    assert.equal(await fs.writeFile(`${dir}/a/b.bin`, data), data.length);
    const st = await fs.stat(`${dir}/a/b.bin`);
    assert.equal(st.type, "file");
    assert.equal(st.size, data.length);
    assert.match(st.permissions, /^\d{4}$/);
    assert.deepEqual(
      (await fs.listFiles(dir)).map((e) => [e.name, e.type]),
      [["a", "directory"]],
    );
    assert.equal(sha(await collect(fs.readFile(`${dir}/a/b.bin`))), sha(data));
    await fs.makeDirectory(`${dir}/x/y`);
    assert.equal((await fs.stat(`${dir}/x/y`)).type, "directory");
    await fs.remove(`${dir}/x`, { recursive: true });
    await assert.rejects(
      fs.stat(`${dir}/x`),
      (e) => e instanceof FsError && e.errorKind === "NotFound",
    );
  });

  it("writeFile resumes across cut connections: the file holds every byte once", async () => {
    const proxy = await startProxy(r.address);
    const viaProxy = new RouterClient(proxy.address);
    try {
      const data = randomBytes(40 * MiB);
      const resumes: number[] = [];
      const stop = proxy.cutEveryUp(12 * MiB);
      await new TaskFilesystem(viaProxy, fs.taskId).writeFile(`${dir}/cut.bin`, data, {
        onResume: (o) => resumes.push(o),
      });
      stop();
      assert.ok(resumes.length >= 1);
      assert.equal(sha(await collect(fs.readFile(`${dir}/cut.bin`))), sha(data));
    } finally {
      viaProxy.close();
      await proxy.close();
    }
  });

  it("helper errors become FsError with the helper's kind", async () => {
    const notFound = (e: unknown) => e instanceof FsError && e.errorKind === "NotFound";
    await assert.rejects(fs.stat(`${dir}/nope`), notFound);
    await assert.rejects(collect(fs.readFile(`${dir}/nope`)), notFound);
    await fs.makeDirectory(`${dir}/d`);
    await assert.rejects(
      fs.writeFile(`${dir}/d`, Buffer.alloc(MiB)),
      (e) =>
        e instanceof FsError && e.errorKind === "IsDirectory" && e.kind === "FailedPrecondition",
    );
    await assert.rejects(
      fs.makeDirectory(`${dir}/d`, { parents: false }),
      (e) => e instanceof FsError && e.errorKind === "PathAlreadyExists",
    );
    await assert.rejects(
      fs.stat("relative"),
      (e: Error & { kind?: string }) => e.kind === "InvalidArgument",
    );
  });

  it("watch reports changes under the path, and ends when the caller stops", async () => {
    await fs.makeDirectory(`${dir}/w`);
    const events = fs.watch(`${dir}/w`, { timeoutMs: 30_000 });
    const first = events.next();
    // The helper may start watching after the first writes: write until an event comes.
    let ev: IteratorResult<{ eventType: string; paths: string[] }> | undefined;
    for (let i = 0; i < 300 && !ev; i++) {
      await fs.writeFile(`${dir}/w/f${i}`, Buffer.from("x"));
      ev = await Promise.race([first, new Promise<undefined>((res) => setTimeout(res, 100))]);
    }
    assert.ok(ev && !ev.done, "an event arrived");
    assert.ok(
      ev.value.paths.length > 0 && ev.value.paths.every((p) => p.startsWith(`${dir}/w/`)),
      JSON.stringify(ev.value),
    );
    assert.ok(["Create", "Modify", "Access"].includes(ev.value.eventType));
    await events.return(undefined);
  });

  it("watch with a timeout ends by itself (exit 0 → the iteration just ends)", async () => {
    const seen = [];
    for await (const e of fs.watch(`${dir}/w`, { timeoutMs: 1000, filter: [] })) seen.push(e);
    assert.deepEqual(seen, []);
    await assert.rejects(
      fs.watch(`${dir}/missing`, { timeoutMs: 1000 }).next(),
      (e) => e instanceof FsError && e.errorKind === "NotFound",
    );
  });
});
