/**
 * Fuzzing the edge (issue 15): a few thousand malformed requests to every
 * method of every service, with and without a token, answer no INTERNAL and
 * no UNKNOWN, log no error, and leave the router healthy (health check, a
 * real exec). `npm run fuzz` runs 100,000 (bench/fuzz.ts).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { status } from "@grpc/grpc-js";
import { describeCodes, fuzzMethods, runFuzz } from "../bench/lib/fuzz.ts";
import { issueToken } from "../src/auth/tokens.ts";
import { RouterClient } from "../src/client/client.ts";
import { HOUR } from "./helpers/auth-common.ts";
import { type LoggedRouter, startLoggedRouter } from "./helpers/logged-router.ts";
import { grpcFrame, rawCall } from "./helpers/raw-h2.ts";
import { collect } from "./helpers/router.ts";

const COUNT = Number(process.env.FUZZ_COUNT ?? 3000);
const SEED = Number(process.env.FUZZ_SEED ?? 15);

/** The router answers a health check and runs a command for a task token. */
async function assertHealthy(r: LoggedRouter, taskToken: string): Promise<void> {
  const h = await rawCall(
    r.address,
    "/grpc.health.v1.Health/Check",
    {},
    grpcFrame(Buffer.alloc(0)),
  );
  assert.equal(h.code, status.OK, h.message);
  const c = new RouterClient(r.address, { token: taskToken });
  try {
    const id = await c.start("live", ["echo", "still here"], { stdout: "pipe" });
    assert.deepEqual(await c.wait("live", id), { code: 0 });
    assert.equal((await collect(c.read("live", id, "stdout"))).toString(), "still here\n");
  } finally {
    c.close();
  }
}

for (const auth of ["jwt", "none"] as const) {
  describe(`fuzzing every method (serve --auth ${auth})`, () => {
    let r: LoggedRouter;
    let taskToken: string;
    before(async () => {
      r = await startLoggedRouter({ auth: { mode: auth } });
      await r.newTask("live");
      // With auth none there is no key: tokens are sent and ignored.
      taskToken = r.daemon.signingKey
        ? await issueToken(r.daemon.signingKey, { task: "live" }, HOUR)
        : "x.y.z";
    });
    after(async () => {
      await r.close();
    });

    it("covers all 23 TaskCommandRouter RPCs and the other services", () => {
      const paths = fuzzMethods().map((m) => m.path);
      assert.equal(paths.filter((p) => p.startsWith("/modal.task_command_router.")).length, 23);
      for (const s of ["Tasks", "Execs", "Images", "Secrets", "Volumes"]) {
        assert.ok(
          paths.some((p) => p.startsWith(`/taskrouter.v1.${s}/`)),
          s,
        );
      }
      assert.ok(paths.includes("/grpc.health.v1.Health/Watch"));
    });

    it(`${COUNT} malformed requests: no INTERNAL, no UNKNOWN, nothing logged`, async () => {
      const tokens = [undefined, "not.a.token", taskToken, r.adminToken ?? "x.y.z"];
      const report = await runFuzz({ address: r.address, tokens, count: COUNT, seed: SEED });
      assert.equal(report.calls, COUNT);
      assert.equal(
        report.internalOrUnknown,
        0,
        `${describeCodes(report.codes)}\n${JSON.stringify(report.findings.slice(0, 5), null, 1)}`,
      );
      assert.ok(
        (report.codes.get(status.INVALID_ARGUMENT) ?? 0) > COUNT / 4,
        describeCodes(report.codes),
      );
      if (auth === "jwt") assert.ok((report.codes.get(status.UNAUTHENTICATED) ?? 0) > COUNT / 4);
      const errors = r.logs.filter((l) => (l.level as number) >= 50);
      assert.deepEqual(errors, [], "the router logged errors");
      await assertHealthy(r, taskToken);
    });
  });
}
