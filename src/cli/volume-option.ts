import { InvalidArgumentError } from "commander";
import type { TaskVolume } from "../gen/taskrouter/v1/volumes_pb.ts";

/** One `task create --volume` value. */
export interface VolumeOption {
  name: string;
  path: string;
  readOnly: boolean;
}

/**
 * Collects repeated `--volume NAME:/path[:ro|:rw]` options: NAME is up to
 * the first `:`, the path the rest (the router checks both). A path that
 * itself ends in `:ro` or `:rw` needs an explicit `:rw` after it.
 */
export function collectVolume(v: string, prev: VolumeOption[]): VolumeOption[] {
  const i = v.indexOf(":");
  let path = i < 0 ? "" : v.slice(i + 1);
  let readOnly = false;
  const mode = /:(ro|rw)$/.exec(path);
  if (mode) {
    readOnly = mode[1] === "ro";
    path = path.slice(0, -3);
  }
  if (i <= 0 || !path.startsWith("/")) {
    throw new InvalidArgumentError(`--volume takes NAME:/path[:ro], got ${v}`);
  }
  return [...prev, { name: v.slice(0, i), path, readOnly }];
}

/** A task's volumes for `task ls`: `NAME:/path[:ro]`, comma-separated; "-" for none. */
export function formatVolumes(volumes: readonly TaskVolume[]): string {
  if (volumes.length === 0) return "-";
  return volumes.map((v) => `${v.name}:${v.path}${v.readOnly ? ":ro" : ""}`).join(",");
}
