"""The golden Istio configurations (tests/mesh/golden/istio, written by
istiod's own generator through scripts/mesh-golden) are those of the
examples as they are now, and say what the example needs istiod to make of
it.

* Every input the golden files came from (examples/istio's manifests, the
  generator and its cluster objects) still has the SHA-256 recorded in
  sources.json; a changed manifest fails here until scripts/mesh-golden is
  run and its output committed. Every manifest of examples/istio is an
  input.
* What istiod made, per variant (on the shared egress gateway, the
  WasmPlugin and key route affinity with the EnvoyFilter; the WasmPlugin on
  a gateway of its own, the manifests edited by the README's sed command):
  the filter in the gateway's HTTP chain before the router
  with the example's configuration and FAIL_RELOAD, the data cluster
  ORIGINAL_DST without use_http_header, the discovery cluster ORIGINAL_DST
  with it, the EnvoyFilter patches where they are meant to land (Server
  header, cleanup intervals, the affinity filter right before the router
  with allow_on_headers_stop_iteration, the route's body buffer limit), the
  route to the data cluster with the example's timeout and no retries.
* On the shared gateway, another team's egress (partner.yaml) keeps its own
  listener, route and settings; the WasmPlugin's filter is in its chain too
  (hence ``hosts``), the affinity EnvoyFilter's is not.

test_istio_gateway.py runs Envoy on these files.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

import istio_gateway as ig
from istio_gateway import GOLDEN, REPO, golden, hcm_of, sources, wasm_config

DATA = "outbound|8000||alternator.example"
DISCOVERY = "outbound|8000||alternator-discovery.example"
ROUTE = "https.443.https-alternator.alternator.istio-egress"
PARTNER_ROUTE = "http.80"
EXAMPLE = REPO / "examples" / "istio"
REGENERATE = "run scripts/mesh-golden and commit tests/mesh/golden/istio"


def stale(root: Path) -> list[str]:
    """The inputs under ``root`` whose SHA-256 differs from sources.json's."""
    return [f"{path} (sha256 {ig.sha256(root / path)[:12]}..., golden files from {digest[:12]}...)"
            for path, digest in sorted(sources()["sources"].items())
            if not (root / path).is_file() or ig.sha256(root / path) != digest]


def test_the_golden_files_are_those_of_the_current_examples():
    assert stale(REPO) == [], f"inputs changed since the golden files were made: {REGENERATE}"


def test_every_istio_manifest_is_an_input():
    recorded = set(sources()["sources"])
    manifests = {str(p.relative_to(REPO)) for p in EXAMPLE.glob("*.yaml")}
    assert manifests <= recorded, f"not translated: {sorted(manifests - recorded)}; add them to " \
                                  "tests/mesh/istio-gen/main.go's variants and " + REGENERATE


def test_a_changed_manifest_is_noticed(tmp_path):
    """The digest check on a copy of the inputs with one byte changed."""
    for path in sources()["sources"]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, tmp_path / path)
    assert stale(tmp_path) == []
    changed = tmp_path / "examples" / "istio" / "10-clusters.yaml"
    changed.write_text(changed.read_text().replace("connectTimeout: 1s", "connectTimeout: 2s", 1))
    assert [s.split(" ")[0] for s in stale(tmp_path)] == ["examples/istio/10-clusters.yaml"]


def test_the_golden_files_name_the_istio_version():
    src = sources()
    assert src["istio"].startswith("istio.io/istio v"), src["istio"]
    version = src["istio"].split(" ")[1]
    gomod = (REPO / "tests" / "mesh" / "istio-gen" / "go.mod").read_text()
    assert f"istio.io/istio {version}" in gomod
    assert version in (EXAMPLE / "README.md").read_text(), "examples/istio/README.md names the Istio used"


# --------------------------------------------------------------------------
# What istiod made of the example


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((EXAMPLE / name).read_text()) if d]


def plugin_config() -> dict:
    (plugin,) = [d for d in docs("20-wasmplugin.yaml") if d["kind"] == "WasmPlugin"]
    return plugin["spec"]["pluginConfig"]


def one(items: list[dict], name: str) -> dict:
    (item,) = [i for i in items if i["name"] == name]
    return item


def alternator_listener(variant: str) -> dict:
    return ig.listener_named(golden(variant, "listeners"), ig.ALTERNATOR_LISTENER)


def http_filters(variant: str) -> list[dict]:
    return hcm_of(alternator_listener(variant))["httpFilters"]


@pytest.mark.parametrize("variant", ig.VARIANTS)
def test_the_clusters_are_original_dst_and_only_discovery_trusts_the_header(variant):
    clusters = golden(variant, "clusters")
    data, discovery = one(clusters, DATA), one(clusters, DISCOVERY)
    for c in (data, discovery):
        assert (c["type"], c["lbPolicy"]) == ("ORIGINAL_DST", "CLUSTER_PROVIDED"), c["name"]
        assert "loadAssignment" not in c and "edsClusterConfig" not in c, c["name"]
        assert c["connectTimeout"] == "1s", c["name"]
        assert c["cleanupInterval"] == "300s", c["name"]      # the EnvoyFilter's MERGE
    assert discovery["originalDstLbConfig"] == {"useHttpHeader": True}
    assert "originalDstLbConfig" not in data
    protocol = data["typedExtensionProtocolOptions"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert protocol["commonHttpProtocolOptions"] == {"idleTimeout": "300s"}
    assert protocol["explicitHttpConfig"] == {"httpProtocolOptions": {}}   # HTTP/1.1 to the nodes


@pytest.mark.parametrize("variant", ig.VARIANTS)
def test_the_gateway_routes_alternator_to_the_data_cluster_unchanged(variant):
    route_config = one(golden(variant, "routes"), ROUTE)
    (vhost,) = route_config["virtualHosts"]
    assert vhost["domains"] == ["alternator.example"]
    (route,) = vhost["routes"]
    assert route["name"] == "gateway-to-alternator"
    action = route["route"]
    assert action["cluster"] == DATA
    assert action["timeout"] == "60s"
    assert "retryPolicy" not in action and "retryPolicy" not in vhost
    # Nothing that would change what the SDK signed.
    for key in ("hostRewriteLiteral", "autoHostRewrite", "prefixRewrite", "regexRewrite"):
        assert key not in action
    assert "requestHeadersToAdd" not in route and "requestHeadersToRemove" not in route
    if variant == "affinity":
        assert route["requestBodyBufferLimit"] == "16777216"    # the EnvoyFilter's HTTP_ROUTE MERGE
    else:
        assert "requestBodyBufferLimit" not in route


@pytest.mark.parametrize("variant", ig.VARIANTS)
def test_the_gateway_passes_the_nodes_server_header(variant):
    assert hcm_of(alternator_listener(variant))["serverHeaderTransformation"] == "PASS_THROUGH"


@pytest.mark.parametrize("variant", ig.VARIANTS)
def test_the_filter_runs_before_the_router_with_the_examples_configuration(variant):
    filters = http_filters(variant)
    names = [f["name"] for f in filters]
    (ext,) = golden(variant, "extension_configs")
    assert ext["name"] in names and names[-1] == "envoy.filters.http.router"
    mine = filters[names.index(ext["name"])]
    assert "ads" in mine["configDiscovery"]["configSource"]
    assert "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm" in mine["configDiscovery"]["typeUrls"]
    # Until the configuration arrives, the listener waits (no request passes
    # without the filter).
    assert mine["configDiscovery"]["configSource"]["initialFetchTimeout"] == "0s"
    between = names[names.index(ext["name"]) + 1:-1]
    if variant == "affinity":
        assert between == [], "the EnvoyFilter inserts the filter right before the router"
    else:
        # UNSPECIFIED_PHASE: istiod puts a WasmPlugin after its own
        # authentication and authorization filters, before the ones that
        # only act when a VirtualService or the upstream asks (fault, CORS,
        # ALPN, gRPC stats) and its metrics filter; none of them changes a
        # request here.
        assert between == ["envoy.filters.http.grpc_stats", "istio.alpn", "envoy.filters.http.fault",
                           "envoy.filters.http.cors", "istio.stats"], between

    config = wasm_config(ext)
    assert config["failurePolicy"] == "FAIL_RELOAD"
    expected = plugin_config()
    if variant == "affinity":
        expected = {**expected, "key_route_affinity": "rmw"}
        assert config["allowOnHeadersStopIteration"] is True
    else:
        assert "allowOnHeadersStopIteration" not in config
    assert json.loads(config["configuration"]["value"]) == expected
    assert config["vmConfig"]["runtime"] == "envoy.wasm.runtime.v8"
    assert config["vmConfig"]["code"]["remote"]["httpUri"]["uri"] == "oci://registry.example.com/alternator-lb:0.1.0"


@pytest.mark.parametrize("variant", ig.VARIANTS)
def test_the_istio_agent_hands_envoy_the_module_as_a_local_file(variant):
    (ext,) = golden(variant, "extension_configs.agent")
    (sent,) = golden(variant, "extension_configs")
    vm = wasm_config(ext)["vmConfig"]
    assert vm["code"] == {"local": {"filename": sources()["agent"]["module_path"]}}
    assert "environmentVariables" not in vm     # the agent strips its ISTIO_META_ ones
    # Nothing else changes on the way.
    for doc in (ext, sent):
        del wasm_config(doc)["vmConfig"]["code"]
        wasm_config(doc)["vmConfig"].pop("environmentVariables", None)
    assert ext == sent
    assert sources()["agent"]["images_pulled"][variant] == ["oci://registry.example.com/alternator-lb:0.1.0"]


def without_filter(variant: str, listener: dict) -> dict:
    (ext,) = golden(variant, "extension_configs")
    hcm_of(listener)["httpFilters"] = [f for f in hcm_of(listener)["httpFilters"] if f["name"] != ext["name"]]
    return listener


def test_the_variants_differ_only_in_how_the_filter_is_installed():
    assert golden("wasmplugin", "clusters") == golden("affinity", "clusters")
    for name in (ig.ALTERNATOR_LISTENER, ig.PARTNER_LISTENER):
        assert without_filter("wasmplugin", ig.listener_named(golden("wasmplugin", "listeners"), name)) == \
            without_filter("affinity", ig.listener_named(golden("affinity", "listeners"), name)), name


def test_the_shared_gateway_keeps_the_partners_traffic_its_own():
    for variant in ("wasmplugin", "affinity"):
        listener = ig.listener_named(golden(variant, "listeners"), ig.PARTNER_LISTENER)
        hcm = hcm_of(listener)
        assert hcm["rds"]["routeConfigName"] == PARTNER_ROUTE
        # The Server header setting is Alternator's chain's only.
        assert "serverHeaderTransformation" not in hcm
        (vhost,) = one(golden(variant, "routes"), PARTNER_ROUTE)["virtualHosts"]
        assert vhost["domains"] == ["api.partner.example"]
        (route,) = vhost["routes"]
        assert route["route"]["cluster"] == ig.PARTNER_CLUSTER
        assert "requestBodyBufferLimit" not in route
        (ext,) = golden(variant, "extension_configs")
        names = [f["name"] for f in hcm["httpFilters"]]
        # A WasmPlugin selects pods and ports, not hosts: its filter is in
        # the partner's chain as well, and "hosts" makes it pass that
        # traffic. The EnvoyFilter matches Alternator's chain only.
        assert (ext["name"] in names) == (variant == "wasmplugin"), (variant, names)


def test_the_filter_routes_only_the_gateway_servers_hosts():
    (gateway,) = [d for d in docs("30-routing.yaml") if d["kind"] == "Gateway"]
    (server,) = gateway["spec"]["servers"]
    assert plugin_config()["hosts"] == server["hosts"]
    (ext,) = golden("affinity", "extension_configs")
    assert json.loads(wasm_config(ext)["configuration"]["value"])["hosts"] == server["hosts"]


def test_the_dedicated_gateway_is_the_readmes_sed_and_carries_alternator_only():
    """The README's sed command is what the generator applied, and the
    dedicated gateway has Alternator's listener alone, with the same filter
    and clusters as the shared one."""
    readme = (EXAMPLE / "README.md").read_text()
    (command,) = re.findall(r"^sed -i (.*) examples/istio/\*\.yaml$", readme, re.M)
    edits = [[a.replace("\\.", "."), b] for a, b in re.findall(r"-e 's/([^/]+)/([^/]+)/'", command)]
    assert edits == sources()["dedicated_edits"], (edits, sources()["dedicated_edits"])
    assert [li["name"] for li in golden("dedicated", "listeners")] == [ig.ALTERNATOR_LISTENER]
    # The same listener, but for the workload's name in istiod's metadata.
    shared = json.dumps(without_filter("wasmplugin", alternator_listener("wasmplugin")))
    assert json.dumps(without_filter("dedicated", alternator_listener("dedicated"))) == \
        shared.replace('"istio-egressgateway"', '"alternator-egress"')
    assert golden("dedicated", "extension_configs") == golden("wasmplugin", "extension_configs")
    dedicated = {c["name"]: c for c in golden("dedicated", "clusters")}
    for name in (DATA, DISCOVERY):
        assert dedicated[name] == one(golden("wasmplugin", "clusters"), name)
