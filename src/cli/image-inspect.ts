import type { Command } from "commander";
import { ImagesAdminClient } from "../client/images.ts";
import { clientFrom, run } from "./common.ts";

const text = (b: Uint8Array) => Buffer.from(b).toString("utf8");

export function registerImageInspect(image: Command): void {
  image
    .command("inspect")
    .description("show an image's details as JSON")
    .argument("<id>", "image id")
    .option("--files", "also list the image's entries")
    .action((id: string, o: { files?: boolean }, cmd: Command) =>
      run(async () => {
        const client = clientFrom(cmd);
        try {
          const res = await new ImagesAdminClient(client).inspect(id, o.files === true);
          const i = res.image;
          if (!i) throw new Error("InspectImage returned no image");
          const out: Record<string, unknown> = {
            id: i.imageId,
            created: new Date(Number(i.createdAtMs)).toISOString(),
            expires: i.expiresAtMs === 0n ? null : new Date(Number(i.expiresAtMs)).toISOString(),
            expired: i.expired,
            renewsOnUse: i.renewsOnUse,
            source: i.source,
            entries: Number(i.entries),
            files: Number(i.files),
            bytes: Number(i.bytes),
            inUse: i.users,
            encrypted: i.encrypted,
          };
          if (o.files) {
            out.tree = res.entries.map((e) => ({
              path: text(e.path),
              type: e.type,
              mode: `0${e.mode.toString(8)}`,
              uid: e.uid,
              gid: e.gid,
              mtime: new Date(Number(e.mtimeNs / 1_000_000n)).toISOString(),
              ...(e.type === "file" ? { size: Number(e.size), digest: e.digest } : {}),
              ...(e.type === "symlink" ? { target: text(e.target) } : {}),
            }));
          }
          process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
        } finally {
          client.close();
        }
        return 0;
      }),
    );
}
