"""Offline checks of the Kubernetes manifests under examples/ (Istio and Envoy
Gateway); no cluster is needed.

* Every manifest passes the schemas published on npm (@kubernetes-models/istio,
  /envoy-gateway, /gateway-api, pinned in tests/examples/package.json): the
  JSON-schema validators generated from the CRDs, plus the packages' TypeScript
  declarations, which catch misspelled fields (validate_manifests.mjs).
* Copies with one mistake each, made at test time, are rejected: the check
  really checks.
* The filter configuration in the WasmPlugin and the EnvoyExtensionPolicy
  uses only keys the filter knows (the list in core/src/config.rs), and the
  names that must agree across resources do: discovery_cluster is the
  outbound|PORT||HOST Istio generates from the discovery ServiceEntry (or the
  cluster the EnvoyPatchPolicy adds), that cluster gets use_http_header, and
  the data cluster does not.
* The Envoy pieces inside EnvoyFilter and EnvoyPatchPolicy (free-form for the
  schemas) are assembled, the way Istio and Envoy Gateway would, into an
  Envoy bootstrap with the real filter and its configuration, which the
  project's Envoy checks with --mode validate (the module is built first, as
  scripts/build ships it).

Needs Node.js and `npm ci --prefix tests/examples` (scripts/setup --tests).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness.envoy import envoy_binary
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EXAMPLES = [REPO / "examples" / "istio", REPO / "examples" / "envoy-gateway"]
VALIDATOR = HERE / "validate_manifests.mjs"
CONFIG_RS = REPO / "core" / "src" / "config.rs"
ISTIO_DEFAULT_CONNECT_TIMEOUT = "10s"


# --------------------------------------------------------------------------
# Loading and the Node validator


def manifest_files() -> list[Path]:
    files = []
    for d in EXAMPLES:
        files += sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml"))
    return files


def load_docs(path: Path, text: str | None = None) -> list[dict]:
    text = path.read_text() if text is None else text
    return [d for d in yaml.safe_load_all(text) if d is not None]


def rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def run_validator(entries: list[dict]) -> list[dict]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is needed for the manifest check: run scripts/setup --tests")
    if not (HERE / "node_modules" / "@kubernetes-models" / "istio").is_dir():
        pytest.fail("the schema packages are not installed: run npm ci --prefix tests/examples")
    proc = subprocess.run(
        [node, str(VALIDATOR)],
        input=json.dumps(entries),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=HERE,
    )
    try:
        results = json.loads(proc.stdout) if proc.returncode in (0, 1) else None
    except ValueError:
        results = None
    if results is None:
        pytest.fail(f"validate_manifests.mjs failed ({proc.returncode}; Node.js 20 or later is needed):\n"
                    f"{proc.stderr[-3000:]}")
    assert [r["source"] for r in results] == [e["source"] for e in entries]
    return results


# Each mutant is a copy of one example file with one mistake; the validator
# must reject it and its message must name the offending word.
#   (id, file, text to replace (first occurrence), replacement, word the error names)
MUTANTS = [
    ("istio-wrong-enum-failStrategy", "examples/istio/20-wasmplugin.yaml",
     "failStrategy: FAIL_CLOSE", "failStrategy: FAIL_CLOSED", "failStrategy"),
    ("istio-misspelled-failStrategy", "examples/istio/20-wasmplugin.yaml",
     "  failStrategy: FAIL_CLOSE", "  failurePolicy: FAIL_CLOSE", "failurePolicy"),
    ("istio-wrong-enum-resolution", "examples/istio/10-clusters.yaml",
     "resolution: NONE", "resolution: ORIGINAL_DST", "resolution"),
    ("istio-misspelled-workloadSelector", "examples/istio/10-clusters.yaml",
     "workloadSelector:", "workloadSelecter:", "workloadSelecter"),
    ("istio-wrong-enum-tls-mode", "examples/istio/30-routing.yaml",
     "mode: ISTIO_MUTUAL", "mode: ISTIO_MTLS", "ISTIO_MTLS"),
    ("istio-port-as-string", "examples/istio/30-routing.yaml",
     "number: 443", 'number: "443"', "number"),
    ("eg-wrong-enum-code-type", "examples/envoy-gateway/alternator-lb.yaml",
     "type: Image", "type: OCI", "type"),
    ("eg-failOpen-not-boolean", "examples/envoy-gateway/alternator-lb.yaml",
     "failOpen: false", 'failOpen: "no"', "failOpen"),
    ("eg-misspelled-jsonPatches", "examples/envoy-gateway/alternator-lb.yaml",
     "jsonPatches:", "jsonPatch:", "jsonPatch"),
    ("eg-misspelled-sectionName", "examples/envoy-gateway/alternator-lb.yaml",
     "sectionName: http", "sectionNme: http", "sectionNme"),
]


def mutate(file: str, old: str, new: str) -> tuple[Path, str]:
    path = REPO / file
    text = path.read_text()
    assert old in text, f"{file} no longer contains {old!r}: update the mutants"
    changed = text.replace(old, new, 1)
    assert load_docs(path, changed) != load_docs(path), f"{old!r} in {file} is not in a manifest (a comment?)"
    return path, changed


@pytest.fixture(scope="module")
def validation():
    """One validator run for the examples and every mutant (Node starts once)."""
    entries = []
    for path in manifest_files():
        for i, doc in enumerate(load_docs(path)):
            entries.append({"source": f"{rel(path)}#{i}", "doc": doc})
    for mid, file, old, new, _ in MUTANTS:
        path, text = mutate(file, old, new)
        for i, doc in enumerate(load_docs(path, text)):
            entries.append({"source": f"mutant:{mid}#{i}", "doc": doc})
    return run_validator(entries)


def test_examples_exist():
    files = [rel(p) for p in manifest_files()]
    assert "examples/istio/20-wasmplugin.yaml" in files
    assert "examples/envoy-gateway/alternator-lb.yaml" in files


def test_every_manifest_passes_the_published_schemas(validation):
    originals = [r for r in validation if not r["source"].startswith("mutant:")]
    assert originals
    bad = {r["source"]: r["errors"] for r in originals if r["errors"]}
    assert not bad, json.dumps(bad, indent=1)


@pytest.mark.parametrize("mid,file,old,new,word", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_a_broken_copy_is_rejected(validation, mid, file, old, new, word):
    errors = [e for r in validation if r["source"].startswith(f"mutant:{mid}#") for e in r["errors"]]
    assert errors, f"{mid}: the validator accepted {new!r} in {file}"
    assert any(word in e for e in errors), f"{mid}: no error names {word!r}:\n" + "\n".join(errors)


def test_an_unknown_kind_is_rejected_not_skipped():
    [result] = run_validator([{"source": "x", "doc": {"apiVersion": "example.com/v1", "kind": "Thing"}}])
    assert result["errors"] and "no model" in result["errors"][0]


# --------------------------------------------------------------------------
# The filter configuration and the names that must agree


def filter_keys() -> list[str]:
    """The keys the filter accepts, from core/src/config.rs (KEYS)."""
    text = CONFIG_RS.read_text()
    m = re.search(r"pub const KEYS: \[&str; (\d+)\] = \[(.*?)\];", text, re.S)
    assert m, "KEYS not found in core/src/config.rs"
    keys = re.findall(r'"([a-z_]+)"', m.group(2))
    assert len(keys) == int(m.group(1))
    return keys


def config_problems(config) -> list[str]:
    """What the filter would refuse in `config`, as far as it can be told
    without the filter (the Envoy test below runs the real one)."""
    # Istio and Envoy Gateway hand the filter this object as a JSON string.
    try:
        config = json.loads(json.dumps(config))
    except (TypeError, ValueError) as e:
        return [f"not JSON: {e}"]
    if not isinstance(config, dict):
        return ["must be an object"]
    problems = [f"unknown key {k!r}" for k in config if k not in filter_keys()]
    seeds = config.get("seeds")
    if not isinstance(seeds, list) or not seeds:
        return problems + ["seeds: a non-empty list is required"]
    cidrs = [ipaddress.ip_network(c, strict=False) for c in config.get("allowed_cidrs", [])]
    for seed in seeds:
        host = re.sub(r"^\[(.*)\](:\d+)?$", r"\1", seed) if seed.startswith("[") else seed.split(":")[0]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            problems.append(f"seed {seed!r} is not an IP literal")
            continue
        if cidrs and not any(ip in c for c in cidrs):
            problems.append(f"seed {seed!r} is outside allowed_cidrs")
    if "port" in config and not (isinstance(config["port"], int) and 1 <= config["port"] <= 65535):
        problems.append("port must be an integer from 1 to 65535")
    return problems


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def istio_docs() -> list[dict]:
    return [d for p in sorted((REPO / "examples" / "istio").glob("*.yaml")) for d in load_docs(p)]


def eg_docs() -> list[dict]:
    return [d for p in sorted((REPO / "examples" / "envoy-gateway").glob("*.yaml")) for d in load_docs(p)]


def istio_clusters(docs: list[dict]) -> dict[str, dict]:
    """ORIGINAL_DST clusters the gateway gets, by the name Istio gives them,
    with the EnvoyFilter CLUSTER MERGE patches applied."""
    clusters = {}
    for se in by_kind(docs, "ServiceEntry"):
        spec = se["spec"]
        if spec.get("resolution") != "NONE":
            continue
        for host in spec["hosts"]:
            for port in spec["ports"]:
                name = f"outbound|{port['number']}||{host}"
                clusters[name] = {
                    "name": name,
                    "type": "ORIGINAL_DST",
                    "lb_policy": "CLUSTER_PROVIDED",
                    "connect_timeout": ISTIO_DEFAULT_CONNECT_TIMEOUT,
                }
    for ef in by_kind(docs, "EnvoyFilter"):
        for p in ef["spec"]["configPatches"]:
            if p["applyTo"] != "CLUSTER":
                continue
            name = p["match"]["cluster"]["name"]
            assert name in clusters, f"EnvoyFilter patches {name}, which no ServiceEntry generates"
            assert p["patch"]["operation"] == "MERGE"
            merge(clusters[name], p["patch"]["value"])
    return clusters


def merge(dst: dict, src: dict) -> None:
    """Protobuf merge semantics, as EnvoyFilter MERGE applies them: messages
    merge field by field, lists append, scalars replace."""
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        elif isinstance(v, list) and isinstance(dst.get(k), list):
            dst[k] = dst[k] + v
        else:
            dst[k] = copy.deepcopy(v)


def uses_http_header(cluster: dict) -> bool:
    return bool(cluster.get("original_dst_lb_config", {}).get("use_http_header"))


def istio_data_cluster(docs: list[dict]) -> str:
    """The cluster the gateway's route leads to."""
    gateway = one(docs, "Gateway")
    gw_ref = f"{gateway['metadata']['namespace']}/{gateway['metadata']['name']}"
    vs = one(docs, "VirtualService")
    routes = [r for r in vs["spec"]["http"] if any(gw_ref in m.get("gateways", []) for m in r.get("match", []))]
    assert len(routes) == 1, "expected one route bound to the gateway"
    [dest] = [d["destination"] for d in routes[0]["route"]]
    return f"outbound|{dest['port']['number']}||{dest['host']}"


def istio_problems(docs: list[dict]) -> list[str]:
    problems = []
    plugin = one(docs, "WasmPlugin")
    spec = plugin["spec"]
    config = spec.get("pluginConfig")
    problems += [f"pluginConfig: {p}" for p in config_problems(config)]
    if spec.get("failStrategy") != "FAIL_CLOSE":
        problems.append("the WasmPlugin must fail closed")
    if spec.get("type") != "HTTP":
        problems.append("the WasmPlugin must be an HTTP filter")
    if not str(spec.get("url", "")).startswith("oci://"):
        problems.append("the WasmPlugin url must name an OCI image (oci://)")

    # One gateway: the plugin, the EnvoyFilter and the Gateway select the same pods.
    labels = spec.get("selector", {}).get("matchLabels")
    for ef in by_kind(docs, "EnvoyFilter"):
        if ef["spec"].get("workloadSelector", {}).get("labels") != labels:
            problems.append(f"EnvoyFilter {ef['metadata']['name']} selects other pods than the WasmPlugin")
    if one(docs, "Gateway")["spec"]["selector"] != labels:
        problems.append("the Gateway selects other pods than the WasmPlugin")

    clusters = istio_clusters(docs)
    discovery = (config or {}).get("discovery_cluster", "alternator_discovery")
    if discovery not in clusters:
        problems.append(f"discovery_cluster {discovery!r} is not a cluster Istio generates "
                        f"from a resolution NONE ServiceEntry ({sorted(clusters)})")
    elif not uses_http_header(clusters[discovery]):
        problems.append(f"{discovery} lacks original_dst_lb_config.use_http_header")
    else:
        host = discovery.split("||", 1)[1]
        [se] = [s for s in by_kind(docs, "ServiceEntry") if host in s["spec"]["hosts"]]
        if se["spec"].get("exportTo") != ["."]:
            problems.append(f"the discovery ServiceEntry must be exportTo ['.'], not {se['spec'].get('exportTo')}")
    data = istio_data_cluster(docs)
    if data not in clusters:
        problems.append(f"the gateway route leads to {data}, which is not an ORIGINAL_DST cluster")
    elif uses_http_header(clusters[data]):
        problems.append(f"{data} must not trust x-envoy-original-dst-host (use_http_header)")
    if data == discovery:
        problems.append("data and discovery clusters must differ")
    return problems


def eg_added_clusters(docs: list[dict]) -> dict[str, dict]:
    clusters = {}
    for epp in by_kind(docs, "EnvoyPatchPolicy"):
        for p in epp["spec"]["jsonPatches"]:
            op = p["operation"]
            if p["type"].endswith("envoy.config.cluster.v3.Cluster") and op["op"] == "add" and op.get("path", "") == "":
                clusters[op["value"]["name"]] = op["value"]
    return clusters


ROUTE_JSONPATH = re.compile(r"^\.\.routes\[\?\(@\.route\.cluster == '([^']+)'\)\]$")


def eg_route_patch(docs: list[dict]) -> tuple[dict, str]:
    """The RouteConfiguration patch and the generated cluster it replaces."""
    [patch] = [p for e in by_kind(docs, "EnvoyPatchPolicy") for p in e["spec"]["jsonPatches"]
               if p["type"].endswith("envoy.config.route.v3.RouteConfiguration")]
    m = ROUTE_JSONPATH.match(patch["operation"].get("jsonPath", ""))
    assert m, f"unexpected jsonPath {patch['operation'].get('jsonPath')!r}"
    return patch, m.group(1)


def eg_problems(docs: list[dict]) -> list[str]:
    problems = []
    policy = one(docs, "EnvoyExtensionPolicy")
    [wasm] = policy["spec"]["wasm"]
    config = wasm.get("config")
    problems += [f"config: {p}" for p in config_problems(config)]
    if wasm.get("failOpen") is not False:
        problems.append("the Wasm extension must fail closed (failOpen: false)")
    if wasm["code"]["type"] == "Image" and wasm["code"]["image"]["url"].startswith("oci://"):
        problems.append("Envoy Gateway image urls take no oci:// prefix")

    clusters = eg_added_clusters(docs)
    discovery = (config or {}).get("discovery_cluster", "alternator_discovery")
    if discovery not in clusters:
        problems.append(f"discovery_cluster {discovery!r} is not added by the EnvoyPatchPolicy ({sorted(clusters)})")
    elif not uses_http_header(clusters[discovery]) or clusters[discovery]["type"] != "ORIGINAL_DST":
        problems.append(f"{discovery} must be ORIGINAL_DST with use_http_header")

    # The route patch: the right RouteConfiguration, the cluster Envoy Gateway
    # generates for the targeted HTTPRoute, replaced by the data cluster.
    route = one(docs, "HTTPRoute")
    gateway = one(docs, "Gateway")
    [parent] = route["spec"]["parentRefs"]
    ns = route["metadata"]["namespace"]
    patch, replaced = eg_route_patch(docs)
    if patch["name"] != f"{gateway['metadata']['namespace']}/{parent['name']}/{parent.get('sectionName')}":
        problems.append(f"the route patch names RouteConfiguration {patch['name']!r}")
    if replaced != f"httproute/{ns}/{route['metadata']['name']}/rule/0":
        problems.append(f"the route patch looks for cluster {replaced!r}")
    if len(route["spec"]["rules"]) != 1:
        problems.append("the route patch assumes one rule")
    data = patch["operation"].get("value")
    if patch["operation"]["op"] != "replace" or patch["operation"].get("path") != "/route/cluster":
        problems.append("the route patch must replace /route/cluster")
    if data not in clusters:
        problems.append(f"the route is switched to {data!r}, which the EnvoyPatchPolicy does not add")
    elif clusters[data]["type"] != "ORIGINAL_DST" or uses_http_header(clusters[data]):
        problems.append(f"{data} must be ORIGINAL_DST without use_http_header")
    if data == discovery:
        problems.append("data and discovery clusters must differ")
    policy_targets = {(t["kind"], t["name"]) for t in policy["spec"]["targetRefs"]}
    if ("HTTPRoute", route["metadata"]["name"]) not in policy_targets:
        problems.append("the EnvoyExtensionPolicy must target the patched HTTPRoute")
    return problems


def test_the_filter_keys_are_read_from_the_source():
    keys = filter_keys()
    assert {"seeds", "port", "discovery_cluster", "allowed_cidrs"} <= set(keys)


def test_istio_example_is_consistent():
    assert istio_problems(istio_docs()) == []


def test_envoy_gateway_example_is_consistent():
    assert eg_problems(eg_docs()) == []


# Mistakes the schemas cannot see (free-form pluginConfig, names across
# resources), each made in a copy; the consistency check must name them.
CONSISTENCY_MUTANTS = [
    ("istio", "examples/istio/20-wasmplugin.yaml", "refresh_interval_ms:", "refresh_intervall_ms:",
     "unknown key 'refresh_intervall_ms'"),
    ("istio", "examples/istio/20-wasmplugin.yaml", "||alternator-discovery.example", "||alternator-discovery",
     "is not a cluster Istio generates"),
    ("istio", "examples/istio/10-clusters.yaml", "        original_dst_lb_config:\n          use_http_header: true\n",
     "", "lacks original_dst_lb_config.use_http_header"),
    ("istio", "examples/istio/10-clusters.yaml", '        name: "outbound|8000||alternator.example"\n    patch:\n'
     "      operation: MERGE\n      value:\n",
     '        name: "outbound|8000||alternator.example"\n    patch:\n      operation: MERGE\n      value:\n'
     "        original_dst_lb_config:\n          use_http_header: true\n",
     "must not trust x-envoy-original-dst-host"),
    ("istio", "examples/istio/20-wasmplugin.yaml", '    - "10.0.0.5"', '    - "10.1.0.5"', "outside allowed_cidrs"),
    ("istio", "examples/istio/10-clusters.yaml", '  exportTo:\n  - "."\n---\n# Connection', "---\n# Connection",
     "must be exportTo"),
    ("eg", "examples/envoy-gateway/alternator-lb.yaml", "discovery_cluster: alternator_discovery",
     "discovery_cluster: alternator-discovery", "is not added by the EnvoyPatchPolicy"),
    ("eg", "examples/envoy-gateway/alternator-lb.yaml", "rule/0'", "rule/1'", "looks for cluster"),
    ("eg", "examples/envoy-gateway/alternator-lb.yaml", "      seeds:", "      seed:", "unknown key 'seed'"),
    ("eg", "examples/envoy-gateway/alternator-lb.yaml", "value: alternator\n", "value: alternator_discovery\n",
     "must be ORIGINAL_DST without use_http_header"),
]


@pytest.mark.parametrize("example,file,old,new,message", CONSISTENCY_MUTANTS,
                         ids=[f"{m[0]}-{m[4].split()[0]}-{i}" for i, m in enumerate(CONSISTENCY_MUTANTS)])
def test_an_inconsistent_copy_is_rejected(example, file, old, new, message):
    changed = REPO / file
    directory = changed.parent
    docs = []
    for path in sorted(directory.glob("*.yaml")):
        text = mutate(file, old, new)[1] if path == changed else None
        docs += load_docs(path, text)
    problems = (istio_problems if example == "istio" else eg_problems)(docs)
    assert any(message in p for p in problems), f"expected {message!r} among {problems}"


# --------------------------------------------------------------------------
# The OCI image and the README


def test_dockerfile_is_a_single_layer_compat_wasm_image():
    lines = [ln.strip() for ln in (REPO / "examples" / "istio" / "Dockerfile").read_text().splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    assert instructions[0] == "FROM scratch"
    layer_making = [ln for ln in instructions if ln.split()[0].upper() in ("COPY", "ADD", "RUN")]
    assert len(layer_making) == 1, "exactly one layer, holding the module"
    assert layer_making[0].split()[-1] in ("/plugin.wasm", "plugin.wasm", "./plugin.wasm")


def test_readmes_name_only_files_that_exist():
    for readme in (REPO / "examples" / "istio" / "README.md", REPO / "examples" / "envoy-gateway" / "README.md"):
        text = readme.read_text()
        for name in set(re.findall(r"\b([\w.-]+\.yaml)\b", text)):
            if name in ("envoy.yaml",):
                continue
            assert (readme.parent / name).exists(), f"{rel(readme)} mentions {name}, which is not there"


# --------------------------------------------------------------------------
# The Envoy pieces, checked by Envoy itself with the real filter


def bootstrap(clusters: list[dict], route_cluster: str, plugin_config: dict, wasm: Path) -> dict:
    """A gateway-like Envoy: one listener, the filter with `plugin_config` as
    its JSON configuration, the route to `route_cluster`, and `clusters`."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "gateway",
        "route_config": {"virtual_hosts": [{
            "name": "alternator", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": route_cluster, "timeout": "60s"}}],
        }]},
        "http_filters": [
            {"name": "alternator_lb", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "alternator_lb", "root_id": "alternator_lb", "failure_policy": "FAIL_CLOSED",
                    "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(wasm)}}},
                    "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                      "value": json.dumps(plugin_config)},
                },
            }},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }
    return {
        "static_resources": {
            "listeners": [{
                "name": "gateway",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 18000}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}],
            }],
            "clusters": clusters,
        },
    }


def envoy_validate(config: dict, tmp_path: Path) -> tuple[bool, str]:
    binary = envoy_binary()
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(config, indent=1))
    proc = subprocess.run([binary, "--mode", "validate", "-c", str(path), "-l", "info", "--disable-hot-restart"],
                          capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    return proc.returncode == 0 and proc.stdout.strip().endswith("OK"), out


def istio_bootstrap(docs: list[dict], wasm: Path) -> dict:
    clusters = istio_clusters(docs)
    return bootstrap(list(clusters.values()), istio_data_cluster(docs),
                     one(docs, "WasmPlugin")["spec"]["pluginConfig"], wasm)


def eg_bootstrap(docs: list[dict], wasm: Path) -> dict:
    patch, _ = eg_route_patch(docs)
    [wasm_ext] = one(docs, "EnvoyExtensionPolicy")["spec"]["wasm"]
    return bootstrap(list(eg_added_clusters(docs).values()), patch["operation"]["value"], wasm_ext["config"], wasm)


def test_istio_gateway_config_is_accepted_by_envoy(module, tmp_path):
    ok, out = envoy_validate(istio_bootstrap(istio_docs(), module), tmp_path)
    assert ok, out[-3000:]
    assert "Deprecated field" not in out, out[-3000:]


def test_envoy_gateway_config_is_accepted_by_envoy(module, tmp_path):
    ok, out = envoy_validate(eg_bootstrap(eg_docs(), module), tmp_path)
    assert ok, out[-3000:]
    assert "Deprecated field" not in out, out[-3000:]


def test_envoy_refuses_a_bad_plugin_config(module, tmp_path):
    """The Envoy check runs the filter's own configuration parser: a value it
    refuses fails validation, naming the key."""
    docs = istio_docs()
    config = copy.deepcopy(docs)
    one(config, "WasmPlugin")["spec"]["pluginConfig"]["refresh_interval_ms"] = 5
    ok, out = envoy_validate(istio_bootstrap(config, module), tmp_path)
    assert not ok
    assert 'key "refresh_interval_ms"' in out, out[-3000:]


def test_envoy_refuses_a_misspelled_cluster_field(module, tmp_path):
    docs = istio_docs()
    ef = one(docs, "EnvoyFilter")
    ef["spec"]["configPatches"][0]["patch"]["value"]["original_dst_lb_config"] = {"use_http_headers": True}
    ok, out = envoy_validate(istio_bootstrap(docs, module), tmp_path)
    assert not ok
    assert "use_http_headers" in out, out[-3000:]
