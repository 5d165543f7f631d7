import { readFileSync } from "node:fs";
import { FailedPreconditionError, PermissionDeniedError } from "../../errors.ts";
import { IMAGE_INPUT } from "../../limits.ts";
import { readBounded } from "./bounded.ts";

/** A user name and password for a registry (from a docker-style config.json). */
export interface Credentials {
  username: string;
  password: string;
}

/**
 * Reads the credentials for `host` (HOST[:PORT]) from a docker-style
 * `config.json` (`{"auths": {"HOST[:PORT]": {"auth": base64("user:pass")}}}`,
 * or `username` and `password` fields; keys may carry a scheme and a path, as
 * `docker login` writes for Docker Hub). Undefined when the file has no entry
 * for `host`. Throws (with the file's name, never its content) when the file
 * cannot be read or is not such a document.
 */
export function readAuthFile(file: string, host: string): Credentials | undefined {
  let doc: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
  try {
    doc = JSON.parse(readFileSync(file, "utf8")) as typeof doc;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`--registry-auth ${file}: ${code ? `cannot read it (${code})` : "not JSON"}`);
  }
  if (typeof doc !== "object" || doc === null || typeof doc.auths !== "object") {
    throw new Error(`--registry-auth ${file}: no "auths" object (docker config.json format)`);
  }
  for (const [key, v] of Object.entries(doc.auths ?? {})) {
    const k = key.replace(/^[a-z]+:\/\//, "").replace(/\/.*$/, "");
    if (k !== host || typeof v !== "object" || v === null) continue;
    if (typeof v.auth === "string" && v.auth !== "") {
      const plain = Buffer.from(v.auth, "base64").toString("utf8");
      const i = plain.indexOf(":");
      if (i < 0)
        throw new Error(`--registry-auth ${file}: the auth of ${host} is not user:password`);
      return { username: plain.slice(0, i), password: plain.slice(i + 1) };
    }
    if (typeof v.username === "string" && typeof v.password === "string") {
      return { username: v.username, password: v.password };
    }
    throw new Error(`--registry-auth ${file}: the entry of ${host} has no auth`);
  }
  return undefined;
}

/** One challenge of a `WWW-Authenticate` header: scheme and parameters. */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses `WWW-Authenticate` (RFC 7235: `Bearer realm="...",service="...",scope="..."`). */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  const re = /([A-Za-z][\w.-]*)(?:\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*))?/g;
  let cur: Challenge | undefined;
  for (const m of header.matchAll(re)) {
    const [, name = "", value] = m;
    if (value === undefined) {
      cur = { scheme: name.toLowerCase(), params: {} };
      out.push(cur);
    } else if (cur) {
      const v = value.startsWith('"') ? value.slice(1, -1).replace(/\\(.)/g, "$1") : value;
      cur.params[name.toLowerCase()] = v;
    }
  }
  return out;
}

/**
 * Authorization for one registry and repository, as the distribution spec's
 * token flow and basic auth define it.
 *
 * Contract: `header()` is what to send now (undefined: nothing yet).
 * `challenge(wwwAuthenticate)` is called after a 401: it prepares a new header
 * (basic credentials, or a bearer token fetched from the challenge's realm
 * with the credentials if any, for `repository:REPO:pull,push`) and resolves
 * true when the request is worth repeating; false when nothing new can be
 * offered. It throws FailedPrecondition when the registry wants credentials
 * we do not have (the router's configuration, not the caller's token, is at
 * fault) and PermissionDenied when the token service refuses them.
 */
export class RegistryAuth {
  private current: string | undefined;

  constructor(
    private readonly repo: string,
    private readonly creds: Credentials | undefined,
    private readonly fetchImpl: typeof fetch = fetch,
  ) {}

  header(): string | undefined {
    return this.current;
  }

  private basic(): string | undefined {
    if (!this.creds) return undefined;
    return `Basic ${Buffer.from(`${this.creds.username}:${this.creds.password}`).toString("base64")}`;
  }

  async challenge(header: string | null, signal?: AbortSignal): Promise<boolean> {
    const chs = parseChallenges(header ?? "");
    const bearer = chs.find((c) => c.scheme === "bearer");
    if (bearer?.params.realm) {
      const url = new URL(bearer.params.realm);
      if (bearer.params.service) url.searchParams.set("service", bearer.params.service);
      const wanted = `repository:${this.repo}:pull,push`;
      url.searchParams.set("scope", wanted);
      const basic = this.basic();
      const init: RequestInit = basic ? { headers: { authorization: basic } } : {};
      if (signal) init.signal = signal;
      const res = await this.fetchImpl(url, init);
      if (!res.ok) {
        await res.body?.cancel();
        throw new PermissionDeniedError(
          `registry token service ${url.origin} refused (HTTP ${res.status})${basic ? "" : ": give credentials with --registry-auth"}`,
        );
      }
      const max = IMAGE_INPUT.tokenBytes;
      const body = await readBounded(
        res,
        max,
        () =>
          new PermissionDeniedError(
            `registry token service ${url.origin}: answer over ${max} bytes`,
          ),
      );
      let doc: { token?: string; access_token?: string };
      try {
        doc = JSON.parse(body.toString("utf8")) as typeof doc;
      } catch {
        throw new PermissionDeniedError(`registry token service ${url.origin}: answer not JSON`);
      }
      const token = doc?.token ?? doc?.access_token;
      if (!token) {
        throw new PermissionDeniedError(`registry token service ${url.origin} gave no token`);
      }
      const next = `Bearer ${token}`;
      if (next === this.current) return false;
      this.current = next;
      return true;
    }
    if (chs.some((c) => c.scheme === "basic") || chs.length === 0) {
      const basic = this.basic();
      if (!basic) {
        throw new FailedPreconditionError(
          "the registry wants credentials: give a docker config.json with --registry-auth",
        );
      }
      if (basic === this.current) return false;
      this.current = basic;
      return true;
    }
    throw new FailedPreconditionError(
      `the registry asks for unsupported authentication ${chs.map((c) => c.scheme).join(", ")}`,
    );
  }
}
