import { create } from "@bufbuild/protobuf";
import {
  type CreateSecretRequest,
  type CreateSecretResponse,
  CreateSecretResponseSchema,
  type DeleteSecretRequest,
  type DeleteSecretResponse,
  DeleteSecretResponseSchema,
  type ListSecretsRequest,
  type ListSecretsResponse,
  ListSecretsResponseSchema,
  type SecretInfo as SecretInfoMsg,
  SecretInfoSchema,
} from "../../gen/taskrouter/v1/secrets_pb.ts";
import type { SecretInfo, SecretStore } from "../../secrets/secret-store.ts";
import { type ServerDeps, unary } from "../transport/call.ts";

function toMsg(s: SecretInfo): SecretInfoMsg {
  return create(SecretInfoSchema, {
    name: s.name,
    keys: s.keys,
    createdAtMs: BigInt(s.createdAt),
    updatedAtMs: BigInt(s.updatedAt),
  });
}

/** Handlers of taskrouter.v1.Secrets (admin API), one thin adapter per RPC. Never returns values. */
export function secretsService(deps: ServerDeps, secrets: SecretStore) {
  return {
    createSecret: unary<CreateSecretRequest, CreateSecretResponse>(
      deps,
      "CreateSecret",
      async (req) => {
        const { info, changed } = await secrets.create(
          req.name,
          new Map(Object.entries(req.data)),
          {
            overwrite: req.overwrite,
          },
        );
        return create(CreateSecretResponseSchema, { secret: toMsg(info), changed });
      },
    ),
    listSecrets: unary<ListSecretsRequest, ListSecretsResponse>(deps, "ListSecrets", async () =>
      create(ListSecretsResponseSchema, { secrets: secrets.list().map(toMsg) }),
    ),
    deleteSecret: unary<DeleteSecretRequest, DeleteSecretResponse>(
      deps,
      "DeleteSecret",
      async (req) =>
        create(DeleteSecretResponseSchema, { existed: await secrets.delete(req.name) }),
    ),
  };
}
