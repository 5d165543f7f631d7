import { createPublicKey, type KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey, type KeyInput } from "jose";
import { InvalidArgumentError } from "../errors.ts";
import { SIGNING_ALG, type SigningKey } from "./keys.ts";

/**
 * A key (or key set) whose signatures the router accepts, with the JWS
 * algorithms it may verify. Only asymmetric algorithms are ever accepted: a
 * verifier must not be able to mint tokens.
 */
export interface TrustedKey {
  /** Where the key came from, for logs and error messages (never secret). */
  readonly label: string;
  readonly key: KeyInput | JWTVerifyGetKey;
  readonly algorithms: string[];
}

const RSA = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];
const EC: Record<string, string> = { prime256v1: "ES256", secp384r1: "ES384", secp521r1: "ES512" };
/** Every asymmetric JWS algorithm we accept from a key set. */
const ASYMMETRIC = [...RSA, "ES256", "ES384", "ES512", "EdDSA", "Ed25519"];

/** The router's own public key. */
export function ownKey(key: SigningKey): TrustedKey {
  return { label: "the router's signing key", key: key.publicKey, algorithms: [SIGNING_ALG] };
}

/**
 * A public key in a PEM SPKI file (`--jwt-public-key`, "-----BEGIN PUBLIC
 * KEY-----"): RSA (RS256..PS512), EC P-256/384/521 (ES256..ES512) or Ed25519 (EdDSA).
 * InvalidArgument when the file is unreadable or holds anything else.
 */
export async function publicKeyFile(file: string): Promise<TrustedKey> {
  const pem = await readFile(file, "utf8").catch((err: NodeJS.ErrnoException) => {
    throw new InvalidArgumentError(`--jwt-public-key ${file}: ${err.code ?? "unreadable"}`);
  });
  let key: KeyObject;
  try {
    if (!pem.includes("-----BEGIN PUBLIC KEY-----")) throw new Error("not SPKI");
    key = createPublicKey({ key: pem, format: "pem" });
  } catch {
    throw new InvalidArgumentError(
      `--jwt-public-key ${file}: not a PEM public key ("-----BEGIN PUBLIC KEY-----", SPKI)`,
    );
  }
  return { label: file, key, algorithms: algorithmsFor(key, file) };
}

function algorithmsFor(key: KeyObject, file: string): string[] {
  const type = key.asymmetricKeyType;
  if (type === "rsa") return RSA;
  if (type === "rsa-pss") return RSA.filter((a) => a.startsWith("PS"));
  if (type === "ed25519") return ["EdDSA", "Ed25519"];
  const curve = key.asymmetricKeyDetails?.namedCurve;
  const alg = type === "ec" && curve ? EC[curve] : undefined;
  if (alg) return [alg];
  throw new InvalidArgumentError(
    `--jwt-public-key ${file}: unsupported key type ${type}${curve ? ` (${curve})` : ""}; use RSA, EC P-256/384/521 or Ed25519`,
  );
}

/**
 * A JSON Web Key Set file (`--jwks`, `{"keys": [...]}`): a token is checked
 * against the key its `kid` names (or the keys that fit its algorithm when it
 * has no `kid`). InvalidArgument when the file is unreadable or not a JWKS of
 * public keys.
 */
export async function keySetFile(file: string): Promise<TrustedKey> {
  const text = await readFile(file, "utf8").catch((err: NodeJS.ErrnoException) => {
    throw new InvalidArgumentError(`--jwks ${file}: ${err.code ?? "unreadable"}`);
  });
  let jwks: JSONWebKeySet;
  try {
    jwks = JSON.parse(text) as JSONWebKeySet;
  } catch {
    throw new InvalidArgumentError(`--jwks ${file}: not JSON`);
  }
  if (!Array.isArray(jwks?.keys) || jwks.keys.length === 0) {
    throw new InvalidArgumentError(`--jwks ${file}: not a JSON Web Key Set ({"keys": [...]})`);
  }
  for (const k of jwks.keys) {
    if (k.kty === "oct" || "d" in k) {
      throw new InvalidArgumentError(
        `--jwks ${file}: holds a private or symmetric key; give only public keys`,
      );
    }
  }
  try {
    return { label: file, key: createLocalJWKSet(jwks), algorithms: ASYMMETRIC };
  } catch {
    throw new InvalidArgumentError(`--jwks ${file}: not a valid JSON Web Key Set`);
  }
}
