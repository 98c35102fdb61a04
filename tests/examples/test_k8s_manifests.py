"""Offline checks of the Kubernetes manifests under examples/ (Istio and Envoy
Gateway); no cluster is needed.

* Every manifest passes the schemas published on npm (@kubernetes-models/istio,
  /envoy-gateway, /gateway-api, pinned in tests/examples/package.json): the
  JSON-schema validators generated from the CRDs, plus the packages' TypeScript
  declarations, which catch misspelled fields (validate_manifests.mjs).
* Copies with one mistake each, made at test time, are rejected: the check
  really checks.
* The filter configuration in the WasmPlugin and the EnvoyExtensionPolicy
  uses only keys the filter knows (the list in core/src/config/document.rs),
  and the names that must agree across resources do: discovery_cluster is the
  outbound|PORT||HOST Istio generates from the discovery ServiceEntry (or the
  cluster the EnvoyPatchPolicy adds), that cluster gets use_http_header, and
  the data cluster does not.
* The Istio example's affinity variant (20-envoyfilter-affinity.yaml, the
  filter installed by an EnvoyFilter with allow_on_headers_stop_iteration)
  agrees with the WasmPlugin (same configuration plus key_route_affinity,
  same image), and its ECDS name, filter position and route patch fit
  together; the failure policy is FAIL_RELOAD and the gateway passes the
  node's Server header through.
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
CONFIG_RS = REPO / "core" / "src" / "config" / "document.rs"
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
     "failStrategy: FAIL_RELOAD", "failStrategy: FAIL_RELOADED", "failStrategy"),
    ("istio-misspelled-failStrategy", "examples/istio/20-wasmplugin.yaml",
     "  failStrategy: FAIL_RELOAD", "  failurePolicy: FAIL_RELOAD", "failurePolicy"),
    ("istio-wrong-enum-applyTo", "examples/istio/20-envoyfilter-affinity.yaml",
     "applyTo: EXTENSION_CONFIG", "applyTo: EXTENSION_CONFIGURATION", "applyTo"),
    ("istio-misspelled-routeConfiguration", "examples/istio/20-envoyfilter-affinity.yaml",
     "routeConfiguration:", "routeConfig:", "routeConfig"),
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
    """The keys the filter accepts, from core/src/config/document.rs (KEYS)."""
    text = CONFIG_RS.read_text()
    m = re.search(r"pub const KEYS: \[&str; (\d+)\] = \[(.*?)\];", text, re.S)
    assert m, "KEYS not found in core/src/config/document.rs"
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
    """The clusters the gateway gets from the resolution NONE ServiceEntries,
    by the name Istio gives them, as istiod builds them for a gateway (seen
    in its own translation, tests/mesh/golden/istio): EDS, since gateways
    cannot use passthrough clusters, unless a DestinationRule for the host
    sets loadBalancer PASSTHROUGH, which makes it ORIGINAL_DST with lb_policy
    CLUSTER_PROVIDED; the rule's connect timeout; then the EnvoyFilter
    CLUSTER MERGE patches applied."""
    policies = {dr["spec"]["host"]: dr["spec"].get("trafficPolicy", {}) for dr in by_kind(docs, "DestinationRule")}
    clusters = {}
    for se in by_kind(docs, "ServiceEntry"):
        spec = se["spec"]
        if spec.get("resolution") != "NONE":
            continue
        for host in spec["hosts"]:
            policy = policies.get(host, {})
            timeout = policy.get("connectionPool", {}).get("tcp", {}).get("connectTimeout",
                                                                          ISTIO_DEFAULT_CONNECT_TIMEOUT)
            for port in spec["ports"]:
                name = f"outbound|{port['number']}||{host}"
                cluster = {"name": name, "connect_timeout": timeout}
                if policy.get("loadBalancer", {}).get("simple") == "PASSTHROUGH":
                    cluster.update(type="ORIGINAL_DST", lb_policy="CLUSTER_PROVIDED")
                else:
                    cluster.update(type="EDS", eds_cluster_config={"eds_config": {"ads": {}}})
                clusters[name] = cluster
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
    if spec.get("failStrategy") != "FAIL_RELOAD":
        problems.append("the WasmPlugin must use failStrategy FAIL_RELOAD (never fail open)")
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
    # A shared gateway: the filter routes the Gateway server's hosts, and
    # lets every other service's requests pass.
    server_hosts = [h for server in one(docs, "Gateway")["spec"]["servers"] for h in server["hosts"]]
    if (config or {}).get("hosts") != server_hosts:
        problems.append(f"pluginConfig hosts {(config or {}).get('hosts')} must be the Gateway server's "
                        f"hosts {server_hosts}: on a shared gateway the filter routes only those")

    clusters = istio_clusters(docs)
    discovery = (config or {}).get("discovery_cluster", "alternator_discovery")
    if discovery not in clusters:
        problems.append(f"discovery_cluster {discovery!r} is not a cluster Istio generates "
                        f"from a resolution NONE ServiceEntry ({sorted(clusters)})")
    elif clusters[discovery]["type"] != "ORIGINAL_DST":
        problems.append(f"{discovery} is not an ORIGINAL_DST cluster on the gateway: its host needs a "
                        "DestinationRule with loadBalancer PASSTHROUGH")
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
    elif clusters[data]["type"] != "ORIGINAL_DST":
        problems.append(f"{data} is not an ORIGINAL_DST cluster on the gateway: its host needs a "
                        "DestinationRule with loadBalancer PASSTHROUGH")
    elif uses_http_header(clusters[data]):
        problems.append(f"{data} must not trust x-envoy-original-dst-host (use_http_header)")
    if data == discovery:
        problems.append("data and discovery clusters must differ")
    if not any(p.get("server_header_transformation") == "PASS_THROUGH" for p in istio_hcm_patches(docs)):
        problems.append("the gateway's HTTP connection manager must pass the node's Server header "
                        "through (server_header_transformation: PASS_THROUGH)")
    return problems + istio_affinity_problems(docs)


HCM = "envoy.filters.network.http_connection_manager"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


def patches(docs: list[dict], apply_to: str) -> list[dict]:
    return [p for ef in by_kind(docs, "EnvoyFilter") for p in ef["spec"]["configPatches"]
            if p["applyTo"] == apply_to]


def istio_hcm_patches(docs: list[dict]) -> list[dict]:
    """The typed_config values the EnvoyFilters MERGE into the gateway's HTTP
    connection manager."""
    out = []
    for p in patches(docs, "NETWORK_FILTER"):
        if p["match"]["listener"]["filterChain"]["filter"]["name"] == HCM and p["patch"]["operation"] == "MERGE":
            out.append(p["patch"]["value"]["typed_config"])
    return out


def istio_affinity_filter(docs: list[dict]) -> tuple[dict, dict, dict]:
    """The affinity EnvoyFilter's extension configuration, the HTTP filter
    that names it and the route patch."""
    [ext] = [p["patch"]["value"] for p in patches(docs, "EXTENSION_CONFIG")]
    [http] = [p for p in patches(docs, "HTTP_FILTER")]
    [route] = [p for p in patches(docs, "HTTP_ROUTE")]
    return ext, http, route


def istio_affinity_problems(docs: list[dict]) -> list[str]:
    """20-envoyfilter-affinity.yaml, the filter with key route affinity: the
    same filter configuration as the WasmPlugin's plus affinity, the field
    affinity needs, and the pieces that make Envoy use it."""
    problems = []
    ext, http, route = istio_affinity_filter(docs)
    if ext["typed_config"].get("@type") != WASM_TYPE:
        return ["the affinity extension configuration must be a Wasm HTTP filter"]
    config = ext["typed_config"]["config"]
    if config.get("allow_on_headers_stop_iteration") is not True:
        problems.append("the affinity filter needs allow_on_headers_stop_iteration: true")
    if config.get("failure_policy") != "FAIL_RELOAD":
        problems.append("the affinity filter must use failure_policy FAIL_RELOAD")
    uri = config["vm_config"]["code"]["remote"]["http_uri"]["uri"]
    plugin = one(docs, "WasmPlugin")["spec"]
    if uri != plugin["url"]:
        problems.append(f"the affinity filter loads {uri}, the WasmPlugin {plugin['url']}")
    try:
        filter_config = json.loads(config["configuration"]["value"])
    except ValueError as e:
        return problems + [f"the affinity filter configuration is not JSON: {e}"]
    problems += [f"affinity configuration: {p}" for p in config_problems(filter_config)]
    if filter_config.get("key_route_affinity") not in ("rmw", "any_write"):
        problems.append("the affinity filter must set key_route_affinity to rmw or any_write")
    mine = {k: v for k, v in filter_config.items() if k not in ("key_route_affinity", "partition_keys")}
    if mine != plugin["pluginConfig"]:
        problems.append(f"the affinity configuration differs from the WasmPlugin's pluginConfig "
                        f"beyond key_route_affinity: {mine} != {plugin['pluginConfig']}")
    if (http["patch"]["operation"] != "INSERT_BEFORE"
            or http["match"]["listener"]["filterChain"]["filter"].get("subFilter", {}).get("name")
            != "envoy.filters.http.router"):
        problems.append("the affinity filter must be inserted right before the router")
    discovery = http["patch"]["value"].get("config_discovery", {})
    if http["patch"]["value"].get("name") != ext["name"]:
        problems.append(f"the HTTP filter is named {http['patch']['value'].get('name')!r}, "
                        f"the extension configuration {ext['name']!r}")
    if WASM_TYPE not in discovery.get("type_urls", []) or "ads" not in discovery.get("config_source", {}):
        problems.append("the HTTP filter must take the Wasm configuration over ECDS (ADS)")
    gateway_route = [r for r in one(docs, "VirtualService")["spec"]["http"] if r.get("name") == "gateway-to-alternator"]
    if route["match"]["routeConfiguration"]["vhost"]["route"]["name"] != "gateway-to-alternator" or not gateway_route:
        problems.append("the body buffer limit must be raised on the gateway's route, gateway-to-alternator")
    if route["patch"]["value"].get("request_body_buffer_limit", 0) < 16 * 1024 * 1024:
        problems.append("the gateway's route must hold bodies up to 16 MiB (request_body_buffer_limit)")
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
    ("istio", "examples/istio/10-clusters.yaml", '  exportTo:\n  - "."\n---\n# The data cluster',
     "---\n# The data cluster", "must be exportTo"),
    ("istio", "examples/istio/10-clusters.yaml", "      simple: PASSTHROUGH\n    connectionPool:\n      tcp:\n        # A node",
     "      simple: ROUND_ROBIN\n    connectionPool:\n      tcp:\n        # A node",
     "alternator.example is not an ORIGINAL_DST cluster"),
    ("istio", "examples/istio/10-clusters.yaml", "  host: alternator-discovery.example\n  exportTo:\n  - \".\"\n  trafficPolicy:\n"
     "    loadBalancer:\n      simple: PASSTHROUGH\n",
     "  host: alternator-discovery.example\n  exportTo:\n  - \".\"\n  trafficPolicy:\n",
     "alternator-discovery.example is not an ORIGINAL_DST cluster"),
    ("istio", "examples/istio/20-envoyfilter-affinity.yaml", "            allow_on_headers_stop_iteration: true",
     "            allow_on_headers_stop_iteration: false", "needs allow_on_headers_stop_iteration"),
    ("istio", "examples/istio/20-envoyfilter-affinity.yaml", '"key_route_affinity": "rmw"',
     '"key_route_affinity": "none"', "must set key_route_affinity"),
    ("istio", "examples/istio/20-envoyfilter-affinity.yaml", '"refresh_interval_ms": 1000,',
     '"refresh_interval_ms": 2000,', "differs from the WasmPlugin"),
    ("istio", "examples/istio/20-envoyfilter-affinity.yaml", "        name: alternator-lb.alternator-lb-affinity\n        config_discovery:",
     "        name: alternator-lb.other\n        config_discovery:", "the HTTP filter is named"),
    ("istio", "examples/istio/20-envoyfilter-affinity.yaml", "request_body_buffer_limit: 16777216",
     "request_body_buffer_limit: 1048576", "up to 16 MiB"),
    ("istio", "examples/istio/20-envoyfilter-affinity.yaml", "            name: gateway-to-alternator",
     "            name: mesh-to-gateway", "gateway's route"),
    ("istio", "examples/istio/30-routing.yaml", "server_header_transformation: PASS_THROUGH",
     "server_header_transformation: OVERWRITE", "Server header"),
    ("istio", "examples/istio/20-wasmplugin.yaml", "failStrategy: FAIL_RELOAD", "failStrategy: FAIL_OPEN",
     "never fail open"),
    ("istio", "examples/istio/20-wasmplugin.yaml", '    hosts:\n    - "alternator.example"',
     '    hosts:\n    - "*.example"', "must be the Gateway server's hosts"),
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
        for name in set(re.findall(r"(?<![\w./-])([\w./-]+\.yaml)\b", text)):
            if name in ("envoy.yaml", ".yaml"):     # (".yaml": the end of a glob, *.yaml)
                continue
            # A bare or relative name is beside the README; another path is
            # the repository's.
            where = REPO / name if "/" in name and not name.startswith(".") else readme.parent / name
            assert where.exists(), f"{rel(readme)} mentions {name}, which is not there"


# --------------------------------------------------------------------------
# The Envoy pieces, checked by Envoy itself with the real filter


def plugin_config(config: dict, wasm: Path, failure_policy: str) -> dict:
    """The Wasm filter's PluginConfig a gateway builds from a plugin resource:
    the module as a local file (Istio's agent and Envoy Gateway fetch it and
    hand Envoy a file), `config` as its JSON configuration."""
    return {
        "name": "alternator_lb", "root_id": "alternator_lb", "failure_policy": failure_policy,
        "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(wasm)}}},
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": json.dumps(config)},
    }


def bootstrap(clusters: list[dict], route_cluster: str, wasm_config: dict,
              hcm_merge: list[dict] = (), route_merge: list[dict] = ()) -> dict:
    """A gateway-like Envoy: one listener running the Wasm filter with
    `wasm_config` (a PluginConfig), the route to `route_cluster`, and
    `clusters`; the MERGE patches applied to the HTTP connection manager and
    to the route."""
    route = {"match": {"prefix": "/"}, "route": {"cluster": route_cluster, "timeout": "60s"}}
    for value in route_merge:
        merge(route, value)
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "gateway",
        "route_config": {"virtual_hosts": [{"name": "alternator", "domains": ["*"], "routes": [route]}]},
        "http_filters": [
            {"name": "alternator_lb", "typed_config": {"@type": WASM_TYPE, "config": wasm_config}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }
    for value in hcm_merge:
        merge(hcm, value)
    return {
        "static_resources": {
            "listeners": [{
                "name": "gateway",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 18000}},
                "filter_chains": [{"filters": [{"name": HCM, "typed_config": hcm}]}],
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


# What istiod makes of a WasmPlugin's failStrategy (Istio 1.25 and later).
ISTIO_FAILURE_POLICY = {"FAIL_CLOSE": "FAIL_CLOSED", "FAIL_OPEN": "FAIL_OPEN", "FAIL_RELOAD": "FAIL_RELOAD"}


def istio_bootstrap(docs: list[dict], wasm: Path) -> dict:
    clusters = istio_clusters(docs)
    spec = one(docs, "WasmPlugin")["spec"]
    config = plugin_config(spec["pluginConfig"], wasm, ISTIO_FAILURE_POLICY[spec.get("failStrategy", "FAIL_CLOSE")])
    return bootstrap(list(clusters.values()), istio_data_cluster(docs), config, istio_hcm_patches(docs))


def istio_affinity_bootstrap(docs: list[dict], wasm: Path) -> dict:
    """The gateway with 20-envoyfilter-affinity.yaml instead of the
    WasmPlugin: its Wasm configuration as the istio-agent hands it to Envoy
    (the remote module replaced by the fetched file), and its route patch."""
    ext, _, route = istio_affinity_filter(docs)
    config = copy.deepcopy(ext["typed_config"]["config"])
    config["vm_config"]["code"] = {"local": {"filename": str(wasm)}}
    return bootstrap(list(istio_clusters(docs).values()), istio_data_cluster(docs), config,
                     istio_hcm_patches(docs), [route["patch"]["value"]])


def eg_bootstrap(docs: list[dict], wasm: Path) -> dict:
    patch, _ = eg_route_patch(docs)
    [wasm_ext] = one(docs, "EnvoyExtensionPolicy")["spec"]["wasm"]
    config = plugin_config(wasm_ext["config"], wasm, "FAIL_OPEN" if wasm_ext.get("failOpen") else "FAIL_CLOSED")
    # Envoy Gateway's HTTP connection managers pass the Server header through
    # by default (its xDS translator sets PASS_THROUGH).
    return bootstrap(list(eg_added_clusters(docs).values()), patch["operation"]["value"], config,
                     [{"server_header_transformation": "PASS_THROUGH"}])


def test_istio_gateway_config_is_accepted_by_envoy(module, tmp_path):
    ok, out = envoy_validate(istio_bootstrap(istio_docs(), module), tmp_path)
    assert ok, out[-3000:]
    assert "Deprecated field" not in out, out[-3000:]


def test_istio_affinity_gateway_config_is_accepted_by_envoy(module, tmp_path):
    ok, out = envoy_validate(istio_affinity_bootstrap(istio_docs(), module), tmp_path)
    assert ok, out[-3000:]
    assert "Deprecated field" not in out, out[-3000:]


def test_istio_affinity_filter_reference_is_accepted_by_envoy(module, tmp_path):
    """The HTTP filter the affinity EnvoyFilter inserts, as it is (a reference
    to its configuration over ECDS), on a gateway that gets xDS over ADS the
    way Istio's proxies do."""
    docs = istio_docs()
    _, http, _ = istio_affinity_filter(docs)
    config = istio_affinity_bootstrap(docs, module)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"][0] = http["patch"]["value"]
    config["node"] = {"id": "gateway", "cluster": "gateway"}
    config["dynamic_resources"] = {"ads_config": {
        "api_type": "GRPC", "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}}
    config["static_resources"]["clusters"].append({
        "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 15010}}}}]}]},
    })
    ok, out = envoy_validate(config, tmp_path)
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
    [ef] = [e for e in by_kind(docs, "EnvoyFilter") if e["metadata"]["name"] == "alternator-lb-clusters"]
    ef["spec"]["configPatches"][0]["patch"]["value"]["original_dst_lb_config"] = {"use_http_headers": True}
    ok, out = envoy_validate(istio_bootstrap(docs, module), tmp_path)
    assert not ok
    assert "use_http_headers" in out, out[-3000:]


@pytest.mark.parametrize("where,field,misspelled", [
    ("filter", "allow_on_headers_stop_iteration", "allow_on_header_stop_iteration"),
    ("route", "request_body_buffer_limit", "request_body_buffer_limits"),
])
def test_envoy_refuses_a_misspelled_affinity_field(module, tmp_path, where, field, misspelled):
    """The free-form Envoy pieces of the affinity EnvoyFilter reach Envoy's
    own check: a misspelled field in the filter or in the route patch fails."""
    docs = istio_docs()
    ext, _, route = istio_affinity_filter(docs)
    target = ext["typed_config"]["config"] if where == "filter" else route["patch"]["value"]
    target[misspelled] = target.pop(field)
    ok, out = envoy_validate(istio_affinity_bootstrap(docs, module), tmp_path)
    assert not ok
    assert misspelled in out, out[-3000:]
