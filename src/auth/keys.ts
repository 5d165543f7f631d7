import { randomBytes } from "node:crypto";
import { link, mkdir, readFile, stat, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  type CryptoKey,
  calculateJwkThumbprint,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  importJWK,
  type JWK,
} from "jose";
import { FailedPreconditionError, InvalidArgumentError } from "../errors.ts";

/** The algorithm of the router's own signing key. */
export const SIGNING_ALG = "ES256";
/** The private key, a JWK (mode 0600), under `<data-dir>/auth/`. */
export const PRIVATE_KEY_FILE = "signing-key.jwk";
/** The public key as a PEM SPKI file: what another router takes with `--jwt-public-key`. */
export const PUBLIC_KEY_FILE = "signing-key.pub.pem";

/** The router's own key pair: it mints tokens (`token issue`, `serve --demo`) and verifies them. */
export interface SigningKey {
  /** Key id (the JWK thumbprint), put in the `kid` header of tokens. */
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
}

/** Where the key pair of a data dir lives. */
export function authDir(dataDir: string): string {
  return join(dataDir, "auth");
}

/**
 * Loads the key pair of `dataDir`, creating it on first use: the private key
 * as a JWK in `auth/signing-key.jwk` (0600) and the public key as PEM SPKI in
 * `auth/signing-key.pub.pem`. Concurrent first starts agree on one key: the
 * file is created by an atomic link, and a loser reads the winner's key.
 */
export async function loadOrCreateSigningKey(dataDir: string): Promise<SigningKey> {
  const dir = authDir(dataDir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, PRIVATE_KEY_FILE);
  if (!(await exists(file))) {
    const { privateKey } = await generateKeyPair(SIGNING_ALG, { extractable: true });
    const jwk = await exportJWK(privateKey);
    jwk.kid = await calculateJwkThumbprint(jwk);
    jwk.alg = SIGNING_ALG;
    jwk.use = "sig";
    const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
    await writeFile(tmp, `${JSON.stringify(jwk)}\n`, { mode: 0o600, flag: "wx" });
    try {
      await link(tmp, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    } finally {
      await unlink(tmp);
    }
  }
  const key = await loadSigningKey(dataDir);
  const pub = join(dir, PUBLIC_KEY_FILE);
  const pem = await exportSPKI(key.publicKey);
  if ((await readFile(pub, "utf8").catch(() => "")) !== pem) {
    await writeFile(pub, pem, { mode: 0o644 });
  }
  return key;
}

/**
 * Loads the existing key pair of `dataDir`. FailedPrecondition when there is
 * none (the server creates it on its first start) or when the private key file
 * is readable by others than its owner; InvalidArgument when it is not a key.
 */
export async function loadSigningKey(dataDir: string): Promise<SigningKey> {
  const file = join(authDir(dataDir), PRIVATE_KEY_FILE);
  const st = await stat(file).catch(() => undefined);
  if (!st) {
    throw new FailedPreconditionError(
      `no signing key at ${file} (taskrouter serve --data-dir ${dataDir} creates it on its first start)`,
    );
  }
  if ((st.mode & 0o077) !== 0) {
    throw new FailedPreconditionError(
      `signing key ${file} is readable by other users (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`,
    );
  }
  let jwk: JWK;
  try {
    jwk = JSON.parse(await readFile(file, "utf8")) as JWK;
  } catch {
    throw new InvalidArgumentError(`signing key ${file} is not a JSON Web Key`);
  }
  if (jwk.kty !== "EC" || jwk.crv !== "P-256" || !jwk.d) {
    throw new InvalidArgumentError(`signing key ${file} is not a private P-256 (ES256) JWK`);
  }
  const { d: _d, ...publicJwk } = jwk;
  const privateKey = (await importJWK(jwk, SIGNING_ALG)) as CryptoKey;
  const publicKey = (await importJWK(publicJwk, SIGNING_ALG)) as CryptoKey;
  return { kid: jwk.kid ?? (await calculateJwkThumbprint(publicJwk)), privateKey, publicKey };
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
