/**
 * deploy/kubernetes/ checked offline (no cluster, no kubectl here):
 * - every manifest kustomization.yaml lists parses as YAML, reading the same under YAML 1.1
 *   (Kubernetes' sigs.k8s.io/yaml) and 1.2, and every object validates against the Kubernetes
 *   OpenAPI schemas bundled in `kubernetes-models` (generated from Kubernetes' own OpenAPI
 *   spec: types, required fields, formats such as quantities);
 * - unknown fields are refused (as `kubectl apply`'s strict field validation would): the
 *   objects are type-checked by the TypeScript compiler against kubernetes-models' interfaces,
 *   whose excess-property check names any field the API does not have;
 * - the DaemonSet's args are flags our own `serve` accepts, its references agree (env vars in
 *   args, ConfigMap keys, volumes, ports, probe ports, files of flags under mounts, selectors);
 * - broken copies of the manifests are rejected by the same checks (the test can fail).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import { DaemonSet } from "kubernetes-models/apps/v1/DaemonSet";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { Service } from "kubernetes-models/v1/Service";
import ts from "typescript";
import { parseAllDocuments } from "yaml";
import { BIN, cliEnv, ROOT } from "./helpers/cli-run.ts";

const DIR = join(ROOT, "deploy", "kubernetes");

type Obj = Record<string, unknown> & {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string };
};

/** The kinds the manifests may hold: the model that validates one and its TypeScript interface. */
const KINDS: Record<string, { validate(o: Obj): void; type: string; module: string }> = {
  "v1/Namespace": {
    validate: (o) => new Namespace(o as never).validate(),
    type: "INamespace",
    module: "kubernetes-models/v1/Namespace",
  },
  "v1/ConfigMap": {
    validate: (o) => new ConfigMap(o as never).validate(),
    type: "IConfigMap",
    module: "kubernetes-models/v1/ConfigMap",
  },
  "v1/Service": {
    validate: (o) => new Service(o as never).validate(),
    type: "IService",
    module: "kubernetes-models/v1/Service",
  },
  "apps/v1/DaemonSet": {
    validate: (o) => new DaemonSet(o as never).validate(),
    type: "IDaemonSet",
    module: "kubernetes-models/apps/v1/DaemonSet",
  },
};

function kindOf(o: Obj): string {
  return `${o.apiVersion}/${o.kind}`;
}

/** Parses a manifest file's documents; throws on YAML errors or on a 1.1/1.2 difference. */
function parseManifest(text: string, file: string): Obj[] {
  const read = (version: "1.1" | "1.2") =>
    parseAllDocuments(text, { version, uniqueKeys: true, prettyErrors: true }).flatMap((doc) => {
      if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors[0]?.message}`);
      const value = doc.toJS() as Obj | null;
      return value === null ? [] : [value];
    });
  const objs = read("1.2");
  assert.deepEqual(read("1.1"), objs, `${file} reads differently as YAML 1.1 (Kubernetes) and 1.2`);
  return objs;
}

/** Schema errors of one object (empty: valid). */
function schemaErrors(o: Obj): string[] {
  const kind = KINDS[kindOf(o)];
  if (!kind) return [`${kindOf(o)}: a kind this test does not know (add it to KINDS)`];
  try {
    kind.validate(o);
    return [];
  } catch (err) {
    return [`${kindOf(o)} ${o.metadata?.name}: ${(err as Error).message}`];
  }
}

/**
 * Type errors of the objects against kubernetes-models' interfaces (unknown fields, wrong
 * types the schemas leave open), from one in-memory TypeScript program.
 */
function typeErrors(objs: Obj[]): string[] {
  const file = join(ROOT, "test", "__deploy_kubernetes_types.ts"); // never written to disk
  const lines: string[] = [];
  objs.forEach((o, i) => {
    const kind = KINDS[kindOf(o)];
    if (!kind) return;
    lines.push(`import type { ${kind.type} as T${i} } from "${kind.module}";`);
    lines.push(`export const o${i}: T${i} = ${JSON.stringify(o)};`);
  });
  const source = lines.join("\n");
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) =>
    name === file ? ts.createSourceFile(name, source, lang) : getSourceFile(name, lang, ...rest);
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === file || fileExists(name);
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const msg = ts.flattenDiagnosticMessageText(d.messageText, "\n");
    if (!d.file || d.start === undefined) return msg;
    const line = d.file.getLineAndCharacterOfPosition(d.start).line;
    const obj = /^export const o(\d+)/.exec(source.split("\n")[line] ?? "")?.[1];
    const o = objs[Number(obj)];
    return o ? `${kindOf(o)} ${o.metadata?.name}: ${msg}` : msg;
  });
}

/** Every manifest kustomization.yaml lists, parsed: [file, objects]. */
async function loadManifests(): Promise<[string, Obj[]][]> {
  const kust = parseManifest(await readFile(join(DIR, "kustomization.yaml"), "utf8"), "k")[0] as {
    resources: string[];
  };
  const out: [string, Obj[]][] = [];
  for (const f of kust.resources)
    out.push([f, parseManifest(await readFile(join(DIR, f), "utf8"), f)]);
  return out;
}

interface Container {
  args?: string[];
  env?: { name: string; valueFrom?: { configMapKeyRef?: { name: string; key: string } } }[];
  ports?: { name?: string; containerPort: number; hostPort?: number }[];
  volumeMounts?: { name: string; mountPath: string }[];
  startupProbe?: { grpc?: { port: number } };
  readinessProbe?: { grpc?: { port: number } };
  livenessProbe?: { grpc?: { port: number } };
}
interface PodTemplate {
  metadata: { labels: Record<string, string>; annotations?: Record<string, string> };
  spec: { containers: Container[]; volumes?: { name: string }[] };
}

/** The flags (`--name`) of `taskrouter serve --help`, from the source as it is now. */
async function serveFlags(): Promise<Set<string>> {
  const { stdout } = await promisify(execFile)(process.execPath, [BIN, "serve", "--help"], {
    cwd: ROOT,
    env: cliEnv(),
  });
  return new Set(stdout.match(/--[a-z][a-z0-9-]*/g) ?? []);
}

/** Problems of the DaemonSet's router container against `serve`'s flags and the other objects. */
function daemonSetProblems(objs: Obj[], flags: Set<string>): string[] {
  const problems: string[] = [];
  const ds = objs.find((o) => o.kind === "DaemonSet") as
    | (Obj & { spec: { selector: { matchLabels: Record<string, string> }; template: PodTemplate } })
    | undefined;
  if (!ds) return ["no DaemonSet"];
  const pod = ds.spec.template;
  const c = pod.spec.containers.find((x) => x.args?.[0] === "serve");
  if (!c?.args) return ["no container runs `serve`"];
  const env = new Set((c.env ?? []).map((e) => e.name));
  const flagValues = new Map<string, string>();
  for (const arg of c.args.slice(1)) {
    const m = /^(--[a-z][a-z0-9-]*)(?:=(.*))?$/.exec(arg);
    if (!m?.[1]) {
      problems.push(`arg ${arg}: not --flag or --flag=value (one word per arg)`);
      continue;
    }
    if (!flags.has(m[1])) problems.push(`${m[1]}: not a flag of taskrouter serve`);
    flagValues.set(m[1], m[2] ?? "");
    for (const v of (m[2] ?? "").matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)) {
      if (!env.has(v[1] as string))
        problems.push(`${arg}: $(${v[1]}) is no env var of the container`);
    }
  }
  // ConfigMap keys the env reads exist in the ConfigMaps of the manifests.
  const configMaps = new Map(
    objs
      .filter((o) => o.kind === "ConfigMap")
      .map((o) => [o.metadata?.name, (o as { data?: Record<string, string> }).data ?? {}]),
  );
  for (const e of c.env ?? []) {
    const ref = e.valueFrom?.configMapKeyRef;
    if (ref && !(ref.key in (configMaps.get(ref.name) ?? {}))) {
      problems.push(`env ${e.name}: ConfigMap ${ref.name} has no key ${ref.key}`);
    }
  }
  // Volumes and mounts; files named by flags lie under a mount.
  const volumes = new Set((pod.spec.volumes ?? []).map((v) => v.name));
  const mounts = c.volumeMounts ?? [];
  for (const m of mounts) {
    if (!volumes.has(m.name)) problems.push(`volumeMount ${m.name}: no such volume`);
  }
  for (const f of ["--data-dir", "--jwks", "--tls-cert", "--tls-key", "--registry-auth"]) {
    const path = flagValues.get(f);
    if (path && !mounts.some((m) => path === m.mountPath || path.startsWith(`${m.mountPath}/`))) {
      problems.push(`${f} ${path}: under no volumeMount`);
    }
  }
  // Ports: --listen and --metrics-listen are container ports; probes call the gRPC port.
  const ports = new Map((c.ports ?? []).map((p) => [p.name, p.containerPort]));
  const portOf = (flag: string) => Number(/:(\d+)$/.exec(flagValues.get(flag) ?? "")?.[1]);
  if (portOf("--listen") !== ports.get("grpc")) problems.push("--listen is not the grpc port");
  if (!(c.ports ?? []).some((p) => p.name === "grpc" && p.hostPort === p.containerPort)) {
    problems.push("the grpc port is not on the node (hostPort)");
  }
  if (portOf("--metrics-listen") !== ports.get("metrics")) {
    problems.push("--metrics-listen is not the metrics port");
  }
  if (Number(pod.metadata.annotations?.["prometheus.io/port"]) !== ports.get("metrics")) {
    problems.push("prometheus.io/port is not the metrics port");
  }
  for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"] as const) {
    if (c[probe]?.grpc?.port !== ports.get("grpc")) problems.push(`${probe}: not gRPC health`);
  }
  // Selectors: the DaemonSet's and every Service's match the pod's labels.
  const labels = pod.metadata.labels;
  const matches = (sel: Record<string, string>) =>
    Object.entries(sel).every(([k, v]) => labels[k] === v);
  if (!matches(ds.spec.selector.matchLabels)) problems.push("DaemonSet selector ≠ pod labels");
  for (const s of objs.filter((o) => o.kind === "Service")) {
    const sel = (s as { spec: { selector?: Record<string, string> } }).spec.selector ?? {};
    if (!matches(sel)) problems.push(`Service ${s.metadata?.name}: selector ≠ pod labels`);
  }
  return problems;
}

describe("deploy/kubernetes (offline: schemas, types, serve flags)", () => {
  it("kustomization.yaml lists every manifest of the directory, and only existing ones", async () => {
    const kust = parseManifest(await readFile(join(DIR, "kustomization.yaml"), "utf8"), "k");
    const listed = (kust[0] as { resources: string[] }).resources.sort();
    const files = (await readdir(DIR))
      .filter((f) => /\.ya?ml$/.test(f) && f !== "kustomization.yaml")
      .sort();
    assert.deepEqual(listed, files);
    // The image placeholder is one kustomization.yaml's `images:` sets.
    const images = (kust[0] as { images: { name: string }[] }).images.map((i) => i.name);
    const objs = (await loadManifests()).flatMap(([, o]) => o);
    const ds = objs.find((o) => o.kind === "DaemonSet") as unknown as {
      spec: { template: PodTemplate };
    };
    for (const c of ds.spec.template.spec.containers as { image?: string }[]) {
      assert.ok(images.includes(c.image ?? ""), `image ${c.image} is not in kustomization images`);
    }
  });

  it("every object validates against the Kubernetes OpenAPI schemas, with no unknown field", async () => {
    const manifests = await loadManifests();
    const objs = manifests.flatMap(([, o]) => o);
    assert.deepEqual(objs.map(kindOf).sort(), [
      "apps/v1/DaemonSet",
      "v1/ConfigMap",
      "v1/Namespace",
      "v1/Service",
    ]);
    assert.deepEqual(objs.flatMap(schemaErrors), []);
    assert.deepEqual(typeErrors(objs), []);
  });

  it("kustomize's build of the directory validates too (when kubectl is installed)", async (t) => {
    let built: string;
    try {
      ({ stdout: built } = await promisify(execFile)("kubectl", ["kustomize", DIR], {
        maxBuffer: 16 * 1024 * 1024,
      }));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      t.skip("kubectl is not installed: kustomize's build not checked");
      return;
    }
    const objs = parseManifest(built, "kubectl kustomize");
    assert.equal(objs.length, (await loadManifests()).flatMap(([, o]) => o).length);
    assert.deepEqual(objs.flatMap(schemaErrors), []);
    assert.deepEqual(typeErrors(objs), []);
    for (const o of objs.filter((x) => x.kind !== "Namespace")) {
      assert.equal((o.metadata as { namespace?: string }).namespace, "taskrouter");
    }
    const ds = objs.find((o) => o.kind === "DaemonSet") as unknown as {
      spec: { template: PodTemplate };
    };
    const image = (ds.spec.template.spec.containers[0] as { image?: string }).image;
    assert.equal(image, "registry.example.internal/taskrouter:0.1.0");
  });

  it("the DaemonSet's args are flags of `taskrouter serve`, and its references agree", async () => {
    const objs = (await loadManifests()).flatMap(([, o]) => o);
    assert.deepEqual(daemonSetProblems(objs, await serveFlags()), []);
  });

  it("rejects broken copies (schema, unknown field, unknown flag, dangling references)", async () => {
    const objs = (await loadManifests()).flatMap(([, o]) => o);
    const broken = () => {
      const copy = structuredClone(objs);
      const ds = copy.find((o) => o.kind === "DaemonSet") as unknown as {
        spec: { template: PodTemplate & { spec: { containers: Record<string, unknown>[] } } };
      };
      return { copy, ds, c: ds.spec.template.spec.containers[0] as Record<string, unknown> };
    };
    // A port number as text, a gRPC probe without its port, a bad quantity: schema errors.
    {
      const { copy, c } = broken();
      (c.ports as { containerPort: unknown }[])[0] = { containerPort: "7878" };
      (c.readinessProbe as { grpc: unknown }).grpc = {};
      c.resources = { requests: { memory: "lots" } };
      const errs = copy.flatMap(schemaErrors).join("\n");
      assert.match(errs, /containerPort must be integer/);
      assert.match(errs, /readinessProbe\/grpc must have required property port/);
      assert.match(errs, /requests\/memory/);
    }
    // A misspelt field passes the schemas (they allow unknown fields) but not the type check.
    {
      const { copy, c } = broken();
      (c.volumeMounts as Record<string, unknown>[])[0] = {
        name: "data",
        mountPath: "/var/lib/taskrouter",
        mountPropogation: "Bidirectional",
      };
      assert.deepEqual(copy.flatMap(schemaErrors), []);
      const errs = typeErrors(copy).join("\n");
      assert.match(errs, /"mountPropogation"' does not exist in type 'IVolumeMount'/);
    }
    // An unknown kind is refused, not skipped.
    assert.match(schemaErrors({ apiVersion: "v1", kind: "Podd" }).join(), /a kind this test/);
    // A flag serve does not have, an undefined $(VAR), a volume, port and key that do not exist.
    {
      const { copy, c, ds } = broken();
      const args = c.args as string[];
      args.push("--no-such-flag", "--log-level=$(NOPE)");
      args[args.findIndex((a) => a.startsWith("--listen="))] = "--listen=0.0.0.0:7879";
      (c.volumeMounts as { name: string }[])[1] = { name: "gone" } as { name: string };
      const env = c.env as { valueFrom: { configMapKeyRef: { key: string } } }[];
      if (env[0]) env[0].valueFrom.configMapKeyRef.key = "nokey";
      ds.spec.template.metadata.labels = { other: "x" };
      const problems = daemonSetProblems(copy, await serveFlags());
      const text = problems.join("\n");
      for (const re of [
        /--no-such-flag: not a flag/,
        /\$\(NOPE\) is no env var/,
        /--listen is not the grpc port/,
        /volumeMount gone: no such volume/,
        /has no key nokey/,
        /DaemonSet selector/,
        /Service taskrouter-metrics: selector/,
      ]) {
        assert.match(text, re);
      }
    }
    // A value that YAML 1.1 (Kubernetes) and 1.2 read differently.
    assert.throws(() => parseManifest("mode: 0400\n", "x.yaml"), /reads differently/);
    assert.throws(() => parseManifest("a: 1\na: 2\n", "x.yaml"), /x\.yaml/);
  });
});
