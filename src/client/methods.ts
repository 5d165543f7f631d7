import type { DescService } from "@bufbuild/protobuf";
import type { MethodDefinition } from "@grpc/grpc-js";
import { grpcServiceDef } from "../rpc/service-def.ts";

/**
 * A lookup of the grpc-js method definitions of a generated service by the
 * method's local name (e.g. "createTask"). The names a generated service
 * declares are checked at compile time; the definitions are built once, here.
 */
export function methodsOf<S extends DescService>(
  service: S,
): (name: keyof S["method"] & string) => MethodDefinition<unknown, unknown> {
  const defs = grpcServiceDef(service) as Record<string, MethodDefinition<unknown, unknown>>;
  return (name) => defs[name] as MethodDefinition<unknown, unknown>;
}
