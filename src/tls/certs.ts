import {
  createPrivateKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
  X509Certificate,
} from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { InvalidArgumentError } from "../errors.ts";
import * as der from "./der.ts";

/** A certificate (chain) and its private key, PEM. */
export interface TlsKeyPair {
  cert: Buffer;
  key: Buffer;
  /** The certificate's file (for messages: clients trust it with `--tls-ca`). */
  certFile: string;
}

/**
 * Reads `--tls-cert`/`--tls-key`: PEM files whose first certificate matches
 * the key. InvalidArgument when a file is unreadable, not PEM, or they do not
 * belong together.
 */
export async function loadKeyPair(certFile: string, keyFile: string): Promise<TlsKeyPair> {
  const read = (flag: string, f: string) =>
    readFile(f).catch((err: NodeJS.ErrnoException) => {
      throw new InvalidArgumentError(`${flag} ${f}: ${err.code ?? "unreadable"}`);
    });
  const cert = await read("--tls-cert", certFile);
  const key = await read("--tls-key", keyFile);
  let x509: X509Certificate;
  let priv: KeyObject;
  try {
    x509 = new X509Certificate(cert);
  } catch {
    throw new InvalidArgumentError(`--tls-cert ${certFile}: not a PEM certificate`);
  }
  try {
    priv = createPrivateKey(key);
  } catch {
    throw new InvalidArgumentError(`--tls-key ${keyFile}: not a PEM private key`);
  }
  if (!x509.checkPrivateKey(priv)) {
    throw new InvalidArgumentError(
      `--tls-key ${keyFile} does not belong to --tls-cert ${certFile}`,
    );
  }
  return { cert, key, certFile };
}

/** Names a development certificate always covers. */
const DEV_DNS = ["localhost"];
const DEV_IPS = ["127.0.0.1", "::1"];
const VALID_DAYS = 365;
/** A stored certificate closer than this to its end is made anew. */
const RENEW_BEFORE_MS = 7 * 86_400_000;

/**
 * A self-signed development certificate (ECDSA P-256) for localhost,
 * 127.0.0.1, ::1, this machine's host name and `extraIps`, kept in `dir`
 * (`self-signed.crt`, `self-signed.key` mode 0600). A stored one is reused
 * while it covers those names and is valid for 7 more days.
 */
export async function ensureSelfSigned(dir: string, extraIps: string[] = []): Promise<TlsKeyPair> {
  const dns = [...new Set([...DEV_DNS, hostname()])].filter((h) => /^[A-Za-z0-9.-]+$/.test(h));
  const ips = [...new Set([...DEV_IPS, ...extraIps])];
  const certFile = join(dir, "self-signed.crt");
  const keyFile = join(dir, "self-signed.key");
  const stored = await Promise.all([readFile(certFile), readFile(keyFile)]).catch(() => undefined);
  if (stored && usable(stored[0], stored[1], dns, ips)) {
    return { cert: stored[0], key: stored[1], certFile };
  }
  const { cert, key } = selfSignedCertificate(dns, ips);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const suffix = `.tmp-${process.pid}`;
  await writeFile(keyFile + suffix, key, { mode: 0o600 });
  await writeFile(certFile + suffix, cert, { mode: 0o644 });
  await rename(keyFile + suffix, keyFile);
  await rename(certFile + suffix, certFile);
  return { cert, key, certFile };
}

function usable(cert: Buffer, key: Buffer, dns: string[], ips: string[]): boolean {
  try {
    const x = new X509Certificate(cert);
    return (
      x.checkPrivateKey(createPrivateKey(key)) &&
      Date.parse(x.validTo) - Date.now() > RENEW_BEFORE_MS &&
      dns.every((h) => x.checkHost(h) !== undefined) &&
      ips.every((ip) => x.checkIP(ip) !== undefined)
    );
  } catch {
    return false;
  }
}

const ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2";

/**
 * Builds a self-signed X.509 v3 certificate with node:crypto: subject and
 * issuer CN "taskrouter development certificate", not a CA, key usage
 * digitalSignature, extended key usage serverAuth, and a subjectAltName of
 * `dns` and `ips`. Returns PEM certificate and PKCS#8 PEM key.
 */
export function selfSignedCertificate(
  dns: string[],
  ips: string[],
  now = new Date(),
): { cert: Buffer; key: Buffer } {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const spki = publicKey.export({ type: "spki", format: "der" });
  const algorithm = der.sequence(der.oid(ECDSA_WITH_SHA256));
  const name = der.sequence(
    der.set(der.sequence(der.oid("2.5.4.3"), der.utf8String("taskrouter development certificate"))),
  );
  const ext = (id: string, critical: boolean, value: Buffer) =>
    der.sequence(der.oid(id), ...(critical ? [der.boolean(true)] : []), der.octetString(value));
  const altNames = der.sequence(
    ...dns.map((h) => der.implicit(2, Buffer.from(h, "ascii"))),
    ...ips.map((ip) => der.implicit(7, der.ipBytes(ip))),
  );
  const serial = randomBytes(16);
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x01; // positive, non-zero, 16 bytes
  const notBefore = new Date(now.getTime() - 60 * 60 * 1000);
  const notAfter = new Date(now.getTime() + VALID_DAYS * 86_400_000);
  const tbs = der.sequence(
    der.explicit(0, der.integer(2)), // v3
    der.integer(serial),
    algorithm,
    name,
    der.sequence(der.time(notBefore), der.time(notAfter)),
    name,
    spki,
    der.explicit(
      3,
      der.sequence(
        ext("2.5.29.19", true, der.sequence()), // basicConstraints: not a CA
        ext("2.5.29.15", true, der.tlv(0x03, Buffer.from([0x07, 0x80]))), // keyUsage: digitalSignature
        ext("2.5.29.37", false, der.sequence(der.oid("1.3.6.1.5.5.7.3.1"))), // extKeyUsage: serverAuth
        ext("2.5.29.17", false, altNames),
      ),
    ),
  );
  const signature = sign("sha256", tbs, privateKey); // DER ECDSA-Sig-Value
  const certDer = der.sequence(tbs, algorithm, der.bitString(signature));
  const b64 = certDer.toString("base64").replace(/.{64}/g, "$&\n");
  const cert = `-----BEGIN CERTIFICATE-----\n${b64.replace(/\n$/, "")}\n-----END CERTIFICATE-----\n`;
  const key = privateKey.export({ type: "pkcs8", format: "pem" });
  return { cert: Buffer.from(cert), key: Buffer.from(key) };
}
