// Offline schema check of Kubernetes manifests, for test_k8s_manifests.py.
//
// Reads a JSON array of {"source": "...", "doc": {...}} on stdin (the YAML is
// parsed on the Python side) and writes a JSON array of
// {"source": "...", "errors": ["..."]} on stdout, one entry per document, in
// the same order. Exits 0 when every document passed, 1 when one did not, 2
// on a usage error.
//
// Two checks per document, both driven by the models published on npm
// (package.json pins them; install with `npm ci --prefix tests/examples`):
//
//  1. The JSON-schema validator each @kubernetes-models class carries
//     (generated from the CRDs' openAPIV3Schema): types, enums, required
//     fields, patterns, ranges.
//  2. The TypeScript declarations of the same packages, compiled with the
//     document as an object literal. CRD schemas allow unknown fields, but the
//     API server drops them (or, with kubectl's default strict field
//     validation, refuses them), so a misspelled field is a real bug that the
//     JSON schema alone cannot see. TypeScript's excess-property check finds
//     it, at every nesting level; free-form fields (pluginConfig, the Envoy
//     config inside EnvoyFilter and EnvoyPatchPolicy) are typed as open
//     objects there and are checked by the Python side instead.

import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const ts = require("typescript");

// API group -> npm package holding its models.
const PACKAGES = {
  "networking.istio.io": "@kubernetes-models/istio",
  "extensions.istio.io": "@kubernetes-models/istio",
  "security.istio.io": "@kubernetes-models/istio",
  "telemetry.istio.io": "@kubernetes-models/istio",
  "gateway.envoyproxy.io": "@kubernetes-models/envoy-gateway",
  "gateway.networking.k8s.io": "@kubernetes-models/gateway-api",
};

// The module of one kind, e.g. "@kubernetes-models/istio/networking.istio.io/v1/ServiceEntry".
function modelModule(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !/^[A-Za-z0-9]+$/.test(kind)) {
    return null;
  }
  const parts = apiVersion.split("/");
  if (parts.length === 1) {
    return `kubernetes-models/${parts[0]}/${kind}`; // core group, e.g. "v1"
  }
  const [group, version] = parts;
  const pkg = PACKAGES[group];
  if (pkg) return `${pkg}/${group}/${version}/${kind}`;
  if (!group.includes(".") || group.endsWith(".k8s.io")) {
    return `kubernetes-models/${group}/${version}/${kind}`; // apps/v1, batch/v1, ...
  }
  return null;
}

function describeAjvError(err) {
  if (Array.isArray(err?.errors) && err.errors.length > 0) {
    return err.errors.map((e) => {
      const where = (e.instancePath || "").replace(/^\//, "").replaceAll("/", ".") || "(document)";
      const allowed = e.params?.allowedValues ? ` (allowed: ${e.params.allowedValues.join(", ")})` : "";
      return `schema: ${where}: ${e.message}${allowed}`;
    });
  }
  return [`schema: ${err?.message ?? String(err)}`];
}

async function schemaErrors(entry) {
  const { apiVersion, kind } = entry.doc ?? {};
  const spec = modelModule(apiVersion, kind);
  if (!spec) return [`no model for apiVersion ${JSON.stringify(apiVersion)} kind ${JSON.stringify(kind)}`];
  let mod;
  try {
    mod = await import(spec);
  } catch (e) {
    return [`no model for ${apiVersion} ${kind} (${spec}: ${e.code ?? e.message})`];
  }
  const Model = mod[kind];
  if (typeof Model !== "function") return [`${spec} does not export ${kind}`];
  entry.typeModule = spec;
  try {
    new Model(entry.doc).validate();
    return [];
  } catch (e) {
    return describeAjvError(e);
  }
}

// Compiles every document as `const doc: I<Kind> = <document>;` in one
// in-memory program and returns the diagnostics per document.
function typeErrors(entries) {
  const files = new Map();
  entries.forEach((entry, i) => {
    if (!entry.typeModule) return;
    const name = path.join(here, "__manifests__", `doc${i}.ts`);
    const text =
      `import type { I${entry.doc.kind} as T } from ${JSON.stringify(entry.typeModule)};\n` +
      `export const doc: T = ${JSON.stringify(entry.doc, null, 1)};\n`;
    files.set(name, { index: i, text });
  });
  if (files.size === 0) return new Map();

  const options = {
    noEmit: true,
    strict: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: [],
  };
  const host = ts.createCompilerHost(options, true);
  const fileExists = host.fileExists.bind(host);
  const readFile = host.readFile.bind(host);
  const getSourceFile = host.getSourceFile.bind(host);
  host.fileExists = (f) => files.has(path.resolve(f)) || fileExists(f);
  host.readFile = (f) => files.get(path.resolve(f))?.text ?? readFile(f);
  host.getSourceFile = (f, lang, onError, create) => {
    const v = files.get(path.resolve(f));
    return v ? ts.createSourceFile(f, v.text, lang, true) : getSourceFile(f, lang, onError, create);
  };
  const program = ts.createProgram([...files.keys()], options, host);
  const out = new Map();
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const v = d.file && files.get(path.resolve(d.file.fileName));
    const message = ts.flattenDiagnosticMessageText(d.messageText, "\n");
    if (!v) {
      // Not attributable to one document: report it on all of them.
      for (const f of files.values()) out.set(f.index, [...(out.get(f.index) ?? []), `types: ${message}`]);
      continue;
    }
    const { line } = d.file.getLineAndCharacterOfPosition(d.start ?? 0);
    const near = v.text.split("\n")[line]?.trim() ?? "";
    out.set(v.index, [...(out.get(v.index) ?? []), `types: ${message} (near ${near})`]);
  }
  return out;
}

async function main() {
  let input = "";
  for await (const chunk of process.stdin) input += chunk;
  let entries;
  try {
    entries = JSON.parse(input);
    if (!Array.isArray(entries)) throw new Error("expected a JSON array");
  } catch (e) {
    process.stderr.write(`validate_manifests: bad input: ${e.message}\n`);
    process.exit(2);
  }
  const results = [];
  for (const entry of entries) {
    results.push({ source: entry.source, errors: await schemaErrors(entry) });
  }
  for (const [i, errs] of typeErrors(entries)) results[i].errors.push(...errs);
  process.stdout.write(JSON.stringify(results, null, 1) + "\n");
  process.exit(results.every((r) => r.errors.length === 0) ? 0 : 1);
}

await main();
