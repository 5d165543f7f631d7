import type { DescMethod, MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type {
  handleBidiStreamingCall,
  handleClientStreamingCall,
  handleServerStreamingCall,
  handleUnaryCall,
  ServiceDefinition,
  UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { grpcServiceDef } from "../../rpc/service-def.ts";

type MethodShape = Pick<DescMethod, "input" | "output" | "methodKind">;

/** The grpc-js handler type of one method of a protobuf-es service descriptor. */
export type HandlerOf<M extends MethodShape> = M["methodKind"] extends "unary"
  ? handleUnaryCall<MessageShape<M["input"]>, MessageShape<M["output"]>>
  : M["methodKind"] extends "server_streaming"
    ? handleServerStreamingCall<MessageShape<M["input"]>, MessageShape<M["output"]>>
    : M["methodKind"] extends "client_streaming"
      ? handleClientStreamingCall<MessageShape<M["input"]>, MessageShape<M["output"]>>
      : handleBidiStreamingCall<MessageShape<M["input"]>, MessageShape<M["output"]>>;

/**
 * Every method of service `S`, each with the handler type its descriptor
 * calls for. An object that `satisfies ServiceImpl<typeof X>` has a handler
 * for each RPC of X with the right request and response types: a missing or
 * mistyped handler is a compile error.
 */
export type ServiceImpl<S> =
  S extends GenService<infer R extends GenServiceMethods>
    ? { [K in keyof R]: HandlerOf<R[K]> }
    : never;

/** A service ready for `Server.addService`: its grpc-js definition and its checked handlers. */
export interface BoundService {
  definition: ServiceDefinition;
  implementation: UntypedServiceImplementation;
}

/** Binds a complete, type-checked implementation to its service descriptor. */
export function bindService<R extends GenServiceMethods>(
  service: GenService<R>,
  impl: { [K in keyof R]: HandlerOf<R[K]> },
): BoundService {
  return {
    definition: grpcServiceDef(service),
    implementation: impl as unknown as UntypedServiceImplementation,
  };
}
