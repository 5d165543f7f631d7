/**
 * Clients of taskrouter's Tasks and Volumes admin services by short name, for
 * the volume tests: WireAdmin (independent grpc-js + proto-loader) with the
 * proto file each service is declared in.
 */
import { WireAdmin } from "./wire-admin.ts";

const FILES = {
  Tasks: "taskrouter/v1/tasks.proto",
  Volumes: "taskrouter/v1/volumes.proto",
} as const;

/** A proto-loader client of admin service `service` ("Tasks", "Volumes") on its own channel. */
export class AdminWire extends WireAdmin {
  constructor(address: string, service: keyof typeof FILES, token?: string) {
    super(address, FILES[service], `taskrouter.v1.${service}`, token);
  }

  /** Calls unary method `method` (its proto name, e.g. "CreateVolume"). */
  call(method: string, req: unknown): Promise<Record<string, unknown>> {
    return this.unary(method, req);
  }
}
