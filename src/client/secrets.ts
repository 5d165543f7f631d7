import { create } from "@bufbuild/protobuf";
import {
  CreateSecretRequestSchema,
  type CreateSecretResponse,
  DeleteSecretRequestSchema,
  type DeleteSecretResponse,
  ListSecretsRequestSchema,
  type ListSecretsResponse,
  type SecretInfo,
  Secrets,
} from "../gen/taskrouter/v1/secrets_pb.ts";
import type { RouterClient } from "./client.ts";
import { methodsOf } from "./methods.ts";

const def = methodsOf(Secrets);

/**
 * The secrets admin API (taskrouter.v1.Secrets) over a RouterClient's channel.
 * Every call is safe to retry: creating with the same data and deleting a
 * secret that is gone both succeed.
 */
export class SecretsClient {
  constructor(private readonly client: RouterClient) {}

  /** Creates (or, with `overwrite`, replaces) a secret; `changed` is false when it already held `data`. */
  async create(
    name: string,
    data: Record<string, string>,
    opts: { overwrite?: boolean } = {},
  ): Promise<{ secret: SecretInfo; changed: boolean }> {
    const res = await this.client.unary<CreateSecretResponse>(
      def("createSecret"),
      create(CreateSecretRequestSchema, { name, data, overwrite: opts.overwrite ?? false }),
    );
    if (!res.secret) throw new Error("CreateSecret returned no secret");
    return { secret: res.secret, changed: res.changed };
  }

  /** Names and keys of every secret (never values), sorted by name. */
  async list(): Promise<SecretInfo[]> {
    const res = await this.client.unary<ListSecretsResponse>(
      def("listSecrets"),
      create(ListSecretsRequestSchema, {}),
    );
    return res.secrets;
  }

  /** Removes a secret; returns whether it existed. */
  async delete(name: string): Promise<boolean> {
    const res = await this.client.unary<DeleteSecretResponse>(
      def("deleteSecret"),
      create(DeleteSecretRequestSchema, { name }),
    );
    return res.existed;
  }
}
