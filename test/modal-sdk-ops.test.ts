/**
 * Modal's own JS SDK (npm `modal` 0.11.1), unchanged, driving the calls that
 * change a task and that test/modal-sdk.test.ts leaves out, each checked by
 * its effect: `sandbox.snapshotFilesystem()` (the Image, mounted back, holds
 * what the task wrote before it and not after), a V2 sandbox's
 * `experimentalSnapshot()` (a memory snapshot the router lists, whose restore
 * has the task's files and processes), and a sidecar's `get`,
 * `snapshotDirectory`, `mountImage`/`unmountImage`, `snapshotFilesystem` and
 * `reloadVolumes`. The SDK reaches the router through the stand-in control
 * plane as in test/modal-sdk.test.ts.
 *
 * One router per runtime, and each check only where the router's code differs:
 * filesystem snapshots on runc (the kernel's overlay) and runsc (gVisor's file
 * server), refused on the host runtime (crun's capture is runc's); memory
 * snapshots on runsc, refused on the others; sidecars on runc and crun (mounts
 * reach a task differently), the only runtimes that have them. Container
 * tasks are rooted on a small image (helpers/modal-sdk-ops-image.ts), so a
 * filesystem snapshot stores the task's changes, not this machine's /usr.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import type { ModalClient, Sandbox, SidecarContainer } from "modal";
import { tarDirectory } from "../src/cli/tar-dir.ts";
import { ImagesAdminClient } from "../src/client/images.ts";
import { MemorySnapshotsClient } from "../src/client/memory-snapshots.ts";
import { VolumesClient } from "../src/client/volumes.ts";
import { startVariant, VARIANTS, variantSkip } from "./helpers/fs-sdk.ts";
import { scratch } from "./helpers/images.ts";
import { type ControlPlane, startControlPlane } from "./helpers/modal-control-plane.ts";
import {
  closeSdk,
  type ExecTarget,
  loadSdks,
  modalClient,
  rejectsGrpc,
  routeTask,
  runSdk,
} from "./helpers/modal-sdk.ts";
import { makeOpsImage, OPS_MARKER } from "./helpers/modal-sdk-ops-image.ts";
import type { TestRouter } from "./helpers/router.ts";
import { CRUN, RUNSC, runIn } from "./helpers/runc.ts";

// None of this machine's Modal config plays a part (helpers/modal-sdk.ts).
const { current: sdk } = await loadSdks();

/** A V1 sandbox id (`sb-` and 22 base-62 characters): the main task. */
const V1_ID = "sb-TaskRouterOpsSandbox01";
/** Any other id is a V2 sandbox's to the SDK (memory snapshots go to the router only for those). */
const V2_ID = "sb2-taskrouter-ops";
/** The volume the main task mounts at /data and the sidecar mounts a directory of. */
const VOLUME = "ops-vol";
/** What the SDK's wait() gives for a sidecar ended by terminate (SIGKILL: 128 + 9). */
const TERMINATED = 137;

type Runtime = "host" | "runc" | "crun" | "runsc";
function runtimeOf(oci: string | undefined): Runtime {
  if (oci === undefined) return "host";
  if (oci === CRUN) return "crun";
  if (oci === RUNSC) return "runsc";
  return "runc";
}

/** `sh -c script` through the SDK; asserts exit 0 and returns stdout. */
async function sh(where: ExecTarget, script: string): Promise<string> {
  const { code, out, err } = await runSdk(where, ["sh", "-c", script]);
  assert.equal(code, 0, `sh -c ${script}: ${err}`);
  return out;
}

for (const v of VARIANTS) {
  const rt = runtimeOf(v.oci);
  const skip = await variantSkip(v);
  const sidecars = rt === "runc" || rt === "crun";
  // A hang guard for the whole suite (a stalled call must fail it, not hold CI): not a speed goal.
  describe(`Modal JS SDK 0.11.1: snapshots and sidecars against the router (${v.label})`, {
    skip,
    timeout: 180_000,
  }, () => {
    let r: TestRouter;
    let cp: ControlPlane;
    let modal: ModalClient;
    let sb: Sandbox;
    let task: string;
    let s: Awaited<ReturnType<typeof scratch>>;
    /** The small image container tasks and sidecars are rooted on (unset on the host runtime). */
    let image: string | undefined;
    /** V2 sandbox handles a test made (detached by after() too, should the test fail). */
    const handles: Sandbox[] = [];

    /** Makes `sandboxId` the SDK's way to `taskId`, with a token of that task. */
    const route = (sandboxId: string, taskId: string) => routeTask(cp, r, sandboxId, taskId);
    /** The SDK took `V1_ID` for a V1 sandbox (sidecars are created through the router only for those). */
    const assertV1 = () =>
      assert.ok(cp.calls.includes("SandboxGetTaskId"), `not a V1 sandbox: ${cp.calls.join(" ")}`);
    /** The V2 sandbox `V2_ID`, routed to `taskId`. */
    const v2Sandbox = async (taskId: string) => {
      await route(V2_ID, taskId);
      const v2 = await modal.sandboxes.fromId(V2_ID);
      handles.push(v2);
      return v2;
    };

    before(async () => {
      s = await scratch();
      r = await startVariant(v, { auth: { mode: "jwt" } });
      cp = await startControlPlane();
      if (v.oci) {
        const tree = join(s.dir, "tree");
        await makeOpsImage(tree);
        image = await new ImagesAdminClient(r.client).import(tarDirectory(tree), {
          format: "tree",
          source: "test",
        });
      }
      if (image) {
        await new VolumesClient(r.client).create(VOLUME);
        task = (await r.tasks.create("", { image, volumes: [{ name: VOLUME, path: "/data" }] }))
          .taskId;
      } else {
        task = await r.newTask();
      }
      await route(V1_ID, task);
      modal = modalClient(sdk, cp);
      sb = await modal.sandboxes.fromId(V1_ID);
    });
    after(async () => {
      try {
        for (const h of handles) h.detach();
        await closeSdk({ sb, modal, cp });
      } finally {
        try {
          await r?.close();
        } finally {
          await s?.cleanup();
        }
      }
    });

    if (rt === "host") {
      it("snapshotFilesystem: the host runtime has no task root, the SDK gets FAILED_PRECONDITION", async () => {
        await rejectsGrpc(sb.snapshotFilesystem(), grpc.status.FAILED_PRECONDITION, /host runtime/);
        // Nothing was stored, and the task runs on.
        assert.deepEqual(await new ImagesAdminClient(r.client).list(), []);
        assert.equal(await sh(sb, "echo still running"), "still running\n");
      });
    }

    if (rt === "runc" || rt === "runsc") {
      it("snapshotFilesystem: the Image, mounted back, holds the task's writes and deletes from before it, not after", async () => {
        await sh(
          sb,
          "mkdir -p /srv/ops && echo before > /srv/ops/written && echo changed > /etc/marker && rm /etc/doomed && echo vol > /data/in-volume",
        );
        const snap = await sb.snapshotFilesystem();
        assertV1();
        assert.match(snap.imageId, /^im-/);
        assert.notEqual(snap.imageId, image, "a new image, not the task's own");
        await sh(sb, "echo after > /srv/ops/after");
        await sb.mountImage("/mnt/fs", snap);
        try {
          const seen = await sh(
            sb,
            [
              "cat /mnt/fs/srv/ops/written /mnt/fs/etc/marker",
              "test -e /mnt/fs/etc/doomed || echo doomed-gone",
              "test -e /mnt/fs/srv/ops/after || echo after-absent",
              "test -x /mnt/fs/bin/sh && echo image-files",
              // A volume's files are not part of the task's root.
              "test -e /mnt/fs/data/in-volume || echo volume-absent",
            ].join("; "),
          );
          assert.equal(
            seen,
            "before\nchanged\ndoomed-gone\nafter-absent\nimage-files\nvolume-absent\n",
          );
        } finally {
          await sb.unmountImage("/mnt/fs");
        }
        assert.equal(await sh(sb, "test -e /mnt/fs/srv || echo unmounted"), "unmounted\n");
      });
    }

    if (rt === "runsc") {
      it("experimentalSnapshot (V2): a memory snapshot the router lists; its restore keeps files and processes", async () => {
        // A task of its own on the runtime's default root: the snapshot ends it.
        const source = await r.newTask();
        const v2 = await v2Sandbox(source);
        await sh(
          v2,
          "echo kept > /root/marker; " +
            "setsid sh -c 'echo $$ > /root/pid; exec sleep 1000' </dev/null >/dev/null 2>&1 & " +
            "while [ ! -s /root/pid ]; do sleep 0.05; done",
        );
        const snap = await v2.experimentalSnapshot();
        assert.match(snap.snapshotId, /^ms-[0-9a-f]{20}$/);
        assert.ok(cp.calls.includes("SandboxGetCommandRouterAccess"), cp.calls.join(" "));
        const listed = await new MemorySnapshotsClient(r.client).list();
        assert.deepEqual(
          listed.map((m) => [m.snapshotId, m.taskId, m.ociRuntime]),
          [[snap.snapshotId, source, "runsc"]],
        );
        // The snapshot ended the task.
        assert.ok(!(await r.tasks.list()).some((t) => t.taskId === source), "the task is gone");
        // Restored: the file, and the process that ran (its memory) still running.
        const restored = (await r.tasks.create("", { fromMemorySnapshot: snap.snapshotId })).taskId;
        const seen = await runIn(r, restored, [
          "sh",
          "-c",
          "cat /root/marker; kill -0 $(cat /root/pid) && echo alive",
        ]);
        assert.deepEqual(seen.status, { code: 0 }, seen.stderr);
        assert.equal(seen.stdout, "kept\nalive\n");
        await r.tasks.terminate(restored);
      });
    } else {
      const reason =
        rt === "host"
          ? /the host runtime cannot take memory snapshots/
          : new RegExp(`the ${rt} OCI runtime cannot checkpoint task`);
      it("experimentalSnapshot (V2): the router refuses with FAILED_PRECONDITION; the task runs on, nothing is kept", async () => {
        const v2 = await v2Sandbox(task);
        await rejectsGrpc(v2.experimentalSnapshot(), grpc.status.FAILED_PRECONDITION, reason);
        // The SDK took it for a V2 sandbox: the router's TaskSnapshotMemory, not the control plane's.
        assert.ok(cp.calls.includes("SandboxGetCommandRouterAccess"), cp.calls.join(" "));
        assert.equal(await sh(v2, "echo still running"), "still running\n");
        assert.deepEqual(await new MemorySnapshotsClient(r.client).list(), []);
      });
    }

    if (sidecars) {
      /** The sidecar the tests share ("ops": the volume's directory `d` at /v), made once. */
      let made: Promise<SidecarContainer> | undefined;
      const side = () => {
        made ??= (async () => {
          await sh(sb, "mkdir -p /data/d && echo one > /data/d/f");
          assert.ok(image);
          const vol = new sdk.Volume(VOLUME, VOLUME).withMountOptions({ subPath: "d" });
          return sb.experimentalSidecars.create("ops", new sdk.Image(modal, image, ""), {
            command: ["sleep", "600"],
            volumes: { "/v": vol },
          });
        })();
        return made;
      };

      it("sidecars: get(name) finds the one created and reaches it; an unknown name is NotFoundError", async () => {
        const created = await side();
        assertV1();
        const got = await sb.experimentalSidecars.get("ops");
        assert.equal(got.containerId, created.containerId);
        assert.equal(got.containerName, "ops");
        assert.match(got.containerId, /^ctr-/);
        // The handle get() gave runs in the sidecar: what it writes is in the sidecar's root only.
        await sh(got, "echo from-got > /tmp/got");
        assert.equal(await sh(created, "cat /tmp/got"), "from-got\n");
        assert.equal(await sh(sb, "test -e /tmp/got || echo not-in-main"), "not-in-main\n");
        assert.equal(await got.poll(), null);
        await assert.rejects(sb.experimentalSidecars.get("no-such-sidecar"), sdk.NotFoundError);
      });

      it("sidecar snapshotDirectory: the Image holds the sidecar's directory (mounted in the main container)", async () => {
        const c = await side();
        await sh(c, "mkdir -p /srv/sd/sub && echo a > /srv/sd/a && echo b > /srv/sd/sub/b");
        const img = await c.snapshotDirectory("/srv/sd");
        assert.match(img.imageId, /^im-/);
        // The main container has no /srv/sd: what the mount shows is the sidecar's.
        assert.equal(await sh(sb, "test -e /srv/sd || echo no-sd-in-main"), "no-sd-in-main\n");
        await sb.mountImage("/mnt/from-side", img);
        try {
          assert.equal(await sh(sb, "cat /mnt/from-side/a /mnt/from-side/sub/b"), "a\nb\n");
        } finally {
          await sb.unmountImage("/mnt/from-side");
        }
      });

      it("sidecar mountImage/unmountImage: the sidecar sees the image and the main container does not; unmount takes it away", async () => {
        const c = await side();
        await sh(sb, "mkdir -p /srv/main-img && echo from-main > /srv/main-img/m");
        const img = await sb.snapshotDirectory("/srv/main-img");
        await c.mountImage("/mnt/m", img);
        try {
          assert.equal(await sh(c, "cat /mnt/m/m"), "from-main\n");
          assert.equal(await sh(sb, "test -e /mnt/m/m || echo not-in-main"), "not-in-main\n");
          // An empty directory mounted over part of it.
          await c.mountImage("/mnt/m/empty");
          assert.equal(await sh(c, "echo x > /mnt/m/empty/x && cat /mnt/m/empty/x"), "x\n");
          await c.unmountImage("/mnt/m/empty");
        } finally {
          await c.unmountImage("/mnt/m");
        }
        assert.equal(await sh(c, "test -e /mnt/m/m || echo unmounted"), "unmounted\n");
        // The main container's mount API and the sidecar's are apart: nothing is mounted there.
        await rejectsGrpc(sb.unmountImage("/mnt/m"), grpc.status.NOT_FOUND);
      });

      it("sidecar snapshotFilesystem: the Image is the sidecar's root with its writes, not the main container's", async () => {
        const c = await side();
        await sh(sb, "echo main > /etc/main-only");
        await sh(c, "echo side > /etc/side-only && rm /etc/doomed");
        const img = await c.snapshotFilesystem();
        assert.match(img.imageId, /^im-/);
        await sb.mountImage("/mnt/side-root", img);
        try {
          const seen = await sh(
            sb,
            [
              "cat /mnt/side-root/etc/side-only /mnt/side-root/etc/marker",
              "test -e /mnt/side-root/etc/main-only || echo main-absent",
              "test -e /mnt/side-root/etc/doomed || echo doomed-gone",
              // Its volume's files are not part of its root.
              "test -e /mnt/side-root/v/f || echo volume-absent",
            ].join("; "),
          );
          assert.equal(seen, `side\n${OPS_MARKER}main-absent\ndoomed-gone\nvolume-absent\n`);
        } finally {
          await sb.unmountImage("/mnt/side-root");
        }
      });

      it("sidecar reloadVolumes: OK while its volume directory is the one mounted, FAILED_PRECONDITION once replaced; the main container's own reload is apart", async () => {
        const c = await side();
        await sh(sb, "echo two > /data/d/f");
        await c.reloadVolumes();
        assert.equal(await sh(c, "cat /v/f"), "two\n");
        // The directory the sidecar mounted, replaced behind it: its bind keeps the old one, and
        // its reload says so; the main container (the volume's root) still reloads.
        await sh(sb, "mv /data/d /data/d.old && mkdir /data/d && echo three > /data/d/f");
        await rejectsGrpc(c.reloadVolumes(), grpc.status.FAILED_PRECONDITION, /replaced/);
        await sb.reloadVolumes();
        assert.equal(await sh(c, "cat /v/f"), "two\n");
        assert.equal(await sh(sb, "cat /data/d/f"), "three\n");
      });

      it("sidecar terminate: get(name) is NotFoundError, with includeTerminated the ended one and its result", async () => {
        const c = await side();
        await c.terminate();
        await assert.rejects(sb.experimentalSidecars.get("ops"), sdk.NotFoundError);
        const ended = await sb.experimentalSidecars.get("ops", { includeTerminated: true });
        assert.equal(ended.containerId, c.containerId);
        assert.equal(await ended.poll(), TERMINATED);
        // An ended sidecar's volumes cannot be reloaded.
        await rejectsGrpc(c.reloadVolumes(), grpc.status.FAILED_PRECONDITION, /not running/);
      });
    }
  });
}
