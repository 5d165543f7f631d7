import { type DescFile, type DescService, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { Server } from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { Health } from "../../gen/grpc/health/v1/health_pb.ts";
import { ServerReflection as ReflectionV1 } from "../../gen/grpc/reflection/v1/reflection_pb.ts";
import { ServerReflection as ReflectionV1alpha } from "../../gen/grpc/reflection/v1alpha/reflection_pb.ts";

/** Services every router serves besides its own: health and reflection itself. */
export const STANDARD_SERVICES: readonly DescService[] = [Health, ReflectionV1, ReflectionV1alpha];

/** `file` and every file it imports, transitively, each once (imports first). */
function withDependencies(files: Iterable<DescFile>): DescFile[] {
  const seen = new Set<DescFile>();
  const visit = (f: DescFile) => {
    if (seen.has(f)) return;
    seen.add(f);
    for (const d of f.dependencies) visit(d);
  };
  for (const f of files) visit(f);
  return [...seen];
}

/**
 * Adds the standard gRPC server reflection service (grpc.reflection.v1 and
 * v1alpha, @grpc/reflection) to `server`, describing exactly `services`
 * (plus health and reflection). The descriptors are the protobuf-es ones the
 * server itself runs on (src/gen, made from proto/), serialized as the
 * FileDescriptorProtos reflection answers with: file names, packages and
 * imports are those of proto/, so grpcurl, Postman and Evans see the real
 * files.
 */
export function addReflection(server: Pick<Server, "addService">, services: DescService[]): void {
  const all = [...services, ...STANDARD_SERVICES];
  const files = withDependencies(all.map((s) => s.file));
  const fileDescriptorProtos = files.map((f) =>
    Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto)),
  );
  // @grpc/reflection reads only `fileDescriptorProtos` of each entry of a proto-loader package
  // definition; one entry carrying every file is enough.
  const pkg = { "": { fileDescriptorProtos } } as unknown as ConstructorParameters<
    typeof ReflectionService
  >[0];
  new ReflectionService(pkg, { services: all.map((s) => s.typeName) }).addToServer(server);
}
