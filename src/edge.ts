import { isIPv4, isIPv6 } from "node:net";
import { join } from "node:path";
import type { Logger } from "pino";
import { loadOrCreateSigningKey, type SigningKey } from "./auth/keys.ts";
import { keySetFile, ownKey, publicKeyFile, type TrustedKey } from "./auth/trusted-keys.ts";
import { TokenVerifier } from "./auth/verifier.ts";
import { InvalidArgumentError } from "./errors.ts";
import { ensureSelfSigned, loadKeyPair, type TlsKeyPair } from "./tls/certs.ts";

/** `serve --auth ...`: how calls are authenticated. */
export interface AuthConfig {
  /** "jwt": every call needs a bearer token; "none": no checks (loopback addresses only). */
  mode: "jwt" | "none";
  /** `--jwt-public-key`: a PEM SPKI key of an external token issuer. */
  publicKeyFile?: string | undefined;
  /** `--jwks`: a JSON Web Key Set file of an external token issuer. */
  jwksFile?: string | undefined;
  /** `--jwt-audience`: tokens must carry this `aud`. */
  audience?: string | undefined;
}

/** `serve --tls-cert/--tls-key` or `--tls-self-signed`. */
export type TlsConfig = { certFile: string; keyFile: string } | { selfSigned: true };

/** What the server edge needs, prepared from the config. */
export interface Edge {
  auth: "jwt" | "none";
  /** Verifies tokens (auth "jwt" only). */
  verifier: TokenVerifier | undefined;
  /** The router's own key in `<data-dir>/auth/` (auth "jwt" only). */
  signingKey: SigningKey | undefined;
  tls: TlsKeyPair | undefined;
}

/** The host part of a listen address (`host:port`, `[v6]:port`); "" means 127.0.0.1. */
export function listenHost(listen: string): string {
  const i = listen.lastIndexOf(":");
  return listen.slice(0, Math.max(0, i)).replace(/^\[|\]$/g, "") || "127.0.0.1";
}

/** True when `listen` binds only this machine's loopback interface. */
export function isLoopback(listen: string): boolean {
  const host = listenHost(listen).toLowerCase();
  if (host === "localhost") return true;
  if (isIPv4(host)) return host.startsWith("127.");
  if (isIPv6(host)) {
    const v4 = /^(?:0*:)*:?ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(host)?.[1];
    if (v4) return v4.startsWith("127.");
    return /^(?:0{0,4}:){2,7}0{0,3}1$/.test(host) || host === "::1";
  }
  return false;
}

/**
 * Checks the auth and TLS config and prepares them. InvalidArgument for
 * `--auth none` on a non-loopback address, for external keys with `--auth
 * none`, and for unusable key or certificate files. With auth "jwt" the
 * router's signing key is created on first use.
 */
export async function prepareEdge(
  listen: string,
  dataDir: string,
  auth: AuthConfig,
  tls: TlsConfig | undefined,
  log: Logger,
): Promise<Edge> {
  let verifier: TokenVerifier | undefined;
  let signingKey: SigningKey | undefined;
  if (auth.mode === "none") {
    if (!isLoopback(listen)) {
      throw new InvalidArgumentError(
        `--auth none is only allowed on a loopback listen address (127.0.0.1, ::1, localhost), not ${listen}: anyone who reaches it could run commands`,
      );
    }
    if (auth.publicKeyFile || auth.jwksFile || auth.audience) {
      throw new InvalidArgumentError("--jwt-public-key, --jwks and --jwt-audience need --auth jwt");
    }
    log.warn("authentication is off (--auth none): every local user can run commands");
  } else {
    signingKey = await loadOrCreateSigningKey(dataDir);
    const keys: TrustedKey[] = [ownKey(signingKey)];
    if (auth.publicKeyFile) keys.push(await publicKeyFile(auth.publicKeyFile));
    if (auth.jwksFile) keys.push(await keySetFile(auth.jwksFile));
    verifier = new TokenVerifier({ keys, audience: auth.audience });
  }
  let pair: TlsKeyPair | undefined;
  if (tls && "selfSigned" in tls) {
    const host = listenHost(listen);
    const extra = isIPv4(host) || isIPv6(host) ? [host] : [];
    pair = await ensureSelfSigned(
      join(dataDir, "tls"),
      extra.filter((h) => h !== "0.0.0.0" && h !== "::"),
    );
  } else if (tls) {
    pair = await loadKeyPair(tls.certFile, tls.keyFile);
  }
  return { auth: auth.mode, verifier, signingKey, tls: pair };
}
