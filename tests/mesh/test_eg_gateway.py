"""examples/envoy-gateway as Envoy Gateway's own translators make it
(tests/mesh/golden/envoy-gateway, written by tests/mesh/eg-gen through
scripts/mesh-golden), and Envoy 1.40 running that configuration in front of
a simulated Alternator cluster.

* The golden files are those of the current example (SHA-256 of every input
  in sources.json); regenerate with scripts/mesh-golden.
* What Envoy Gateway made: no policy refused; the EnvoyPatchPolicy's
  clusters (data ORIGINAL_DST without use_http_header, discovery with it)
  and its route patch (the HTTPRoute's rule to the data cluster) landed; the
  Wasm filter with the example's configuration, before the router, enabled
  on that route; the Server header passed through.
* Envoy runs it, changed only as CHANGES lists, and boto3's requests are
  spread over the nodes, their signatures all accepted, the Server header
  unchanged.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from harness import net
from harness.envoy import on_free_ports
from harness.filter_config import build_wasm
from harness.proxy import Proxied, create_table
from harness.traffic import Clients, assert_round_robin, nodes_of, served, wait_served_by
from istio_gateway import REPO, only_loopback, sha256

GOLDEN = REPO / "tests" / "mesh" / "golden" / "envoy-gateway"
EXAMPLE = REPO / "examples" / "envoy-gateway"
LISTENER = "alternator-lb/alternator/http"
READY_LISTENER = "envoy-gateway-proxy-ready-0.0.0.0-19003"
PLACEHOLDER = "httproute/alternator-lb/alternator/rule/0"
SERVER = "ScyllaDB Alternator (test)"


def golden(kind: str) -> list[dict]:
    return json.loads((GOLDEN / f"{kind}.json").read_text())


def sources() -> dict:
    return json.loads((GOLDEN / "sources.json").read_text())


def one(items: list[dict], name: str) -> dict:
    (item,) = [i for i in items if i["name"] == name]
    return item


def hcm(listener: dict) -> dict:
    (f,) = listener["defaultFilterChain"]["filters"]
    return f["typedConfig"]


def wasm_filter(listener: dict) -> dict:
    (f,) = [f for f in hcm(listener)["httpFilters"] if f["name"].startswith("envoy.filters.http.wasm/")]
    return f


def test_the_golden_files_are_those_of_the_current_example():
    stale = [p for p, d in sources()["sources"].items() if sha256(REPO / p) != d]
    assert stale == [], f"changed since the golden files were made: {stale}: run scripts/mesh-golden and commit"
    assert {str(p.relative_to(REPO)) for p in EXAMPLE.glob("*.yaml")} <= set(sources()["sources"])
    version = sources()["envoy_gateway"].split(" ")[1]
    assert f"github.com/envoyproxy/gateway {version}" in (REPO / "tests/mesh/eg-gen/go.mod").read_text()
    assert version in (EXAMPLE / "README.md").read_text(), "the example's README names the version used"


def test_envoy_gateway_accepts_every_policy_and_pulls_the_image():
    assert sources()["problems"] == []
    assert sources()["wasm"]["images_pulled"] == ["oci://registry.example.com/alternator-lb:0.1.0"]


def test_the_patch_policy_clusters_and_route_landed():
    clusters = golden("clusters")
    data, discovery = one(clusters, "alternator"), one(clusters, "alternator_discovery")
    for c in (data, discovery):
        assert (c["type"], c["lbPolicy"]) == ("ORIGINAL_DST", "CLUSTER_PROVIDED")
    assert discovery["originalDstLbConfig"] == {"useHttpHeader": True}
    assert "originalDstLbConfig" not in data
    (routes,) = golden("routes")
    assert routes["name"] == LISTENER
    (vhost,) = routes["virtualHosts"]
    (route,) = vhost["routes"]
    assert route["route"]["cluster"] == "alternator"
    assert route["route"]["timeout"] == "60s"
    assert "retryPolicy" not in route["route"]
    # The Wasm filter, disabled on the listener, is enabled on this route.
    name = wasm_filter(one(golden("listeners"), LISTENER))["name"]
    assert route["typedPerFilterConfig"][name] == {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}


def test_the_filter_runs_before_the_router_with_the_examples_configuration():
    listener = one(golden("listeners"), LISTENER)
    names = [f["name"] for f in hcm(listener)["httpFilters"]]
    f = wasm_filter(listener)
    assert names.index(f["name"]) == len(names) - 2 and names[-1] == "envoy.filters.http.router"
    assert f["disabled"] is True
    config = f["typedConfig"]["config"]
    (policy,) = [d for d in yaml.safe_load_all((EXAMPLE / "alternator-lb.yaml").read_text())
                 if d and d["kind"] == "EnvoyExtensionPolicy"]
    assert json.loads(config["configuration"]["value"]) == policy["spec"]["wasm"][0]["config"]
    # failOpen: false gives Envoy's default, FAIL_CLOSED.
    assert "failurePolicy" not in config
    remote = config["vmConfig"]["code"]["remote"]
    assert remote["httpUri"]["cluster"] == "wasm_cluster"
    assert remote["sha256"] == sources()["wasm"]["sha256"]
    assert hcm(listener)["serverHeaderTransformation"] == "PASS_THROUGH"


# --------------------------------------------------------------------------
# Envoy on it

#: What differs between the golden files and what Envoy runs, and why.
CHANGES = {
    "listener": "the Gateway's listener on 127.0.0.1 and a free port instead of 0.0.0.0:8000: only loopback "
                "addresses here, tests run side by side",
    "ready listener": f"{READY_LISTENER} removed: Envoy Gateway's readiness probe for Kubernetes, on the fixed "
                      "port 19003 of every address",
    "placeholder": f"the EDS cluster {PLACEHOLDER} removed: the HTTPRoute's placeholder Backend, endpoints "
                   "over ADS (absent here); the patched route no longer leads to it",
    "wasm": "the Wasm code as a local file (target/alternator_lb.wasm) instead of a download from Envoy Gateway's "
            "Wasm HTTP server (wasm_cluster: HTTPS with the certgen client certificate over SDS), and "
            "wasm_cluster removed: there is no controller here to serve the pulled image",
    "rds": "RDS read from a file instead of ADS, the golden route configuration verbatim",
    "filter": "the filter's seeds, port and allowed_cidrs set to the simulated nodes', load_balancing pinned "
              "to round_robin (the example's 10.0.0.x are not on this machine)",
}


def bootstrap(workdir: Path, port: int, admin_port: int, filter_keys: dict) -> dict:
    listeners, clusters, routes = (copy.deepcopy(golden(k)) for k in ("listeners", "clusters", "routes"))
    assert [x["name"] for x in listeners] == [LISTENER, READY_LISTENER]
    listeners = [x for x in listeners if x["name"] != READY_LISTENER]
    (listener,) = listeners
    listener["address"]["socketAddress"].update(address="127.0.0.1", portValue=port)
    before = len(clusters)
    clusters = [c for c in clusters if c["name"] not in (PLACEHOLDER, "wasm_cluster")]
    assert len(clusters) == before - 2
    config = wasm_filter(listener)["typedConfig"]["config"]
    config["vmConfig"]["code"] = {"local": {"filename": str(build_wasm())}}
    doc = json.loads(config["configuration"]["value"])
    doc = {**doc, **filter_keys}
    only_loopback(doc)
    config["configuration"]["value"] = json.dumps(doc)
    rds = hcm(listener)["rds"]
    assert "ads" in rds["configSource"]
    path = workdir / "routes.json"
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"versionInfo": "1", "resources": [one(routes, rds["routeConfigName"])]}))
    rds["configSource"] = {"pathConfigSource": {"path": str(path)}, "resourceApiVersion": "V3"}
    for x in listeners + clusters:
        x.pop("@type")
    return {
        "node": {"id": "envoy-alternator-lb-alternator", "cluster": "alternator-lb/alternator"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def test_the_gateway_spreads_sdk_traffic_and_passes_the_server_header(make_cluster, make_envoy, dynamodb,
                                                                      table_name, tmp_path):
    cluster = make_cluster(n_nodes=3)
    cluster.server_header = SERVER

    def start():
        port = net.free_port()
        return make_envoy(bootstrap(tmp_path / "eg", port, net.free_port(), {
            "seeds": cluster.addresses[:2], "port": cluster.port,
            "allowed_cidrs": [cluster.addresses[0].rsplit(".", 1)[0] + ".0/24"], "load_balancing": "round_robin"}),
            concurrency=2), port

    envoy, port = on_free_ports(start)
    p = Proxied(cluster, envoy, f"http://127.0.0.1:{port}", 1.0, stat_prefix="http-8000")
    assert "http.http-8000.downstream_rq_5xx" in envoy.stats()
    net.wait_for(lambda: "discovered 3 nodes" in envoy.log_text(), timeout=15,
                 message="the filter in the Gateway to discover 3 nodes")
    create_table(dynamodb(cluster.endpoint(0)), table_name)
    # Applications use the Gateway's Service as their endpoint (README).
    clients = Clients(p, lambda: dynamodb(p.endpoint), count=4)

    def get_items(client, i, j):
        client.get_item(TableName=table_name, Key={"pk": {"S": f"c{i}"}, "sk": {"S": str(j)}})

    wait_served_by(p, clients, lambda: clients.run(get_items, per_client=3), cluster.addresses,
                   operations={"GetItem"}, what="discovery of every node in every worker")

    def puts_and_gets(client, i, j):
        item = {"pk": {"S": f"c{i}"}, "sk": {"S": str(j)}}
        if j % 2:
            client.put_item(TableName=table_name, Item=item)
        else:
            answer = client.get_item(TableName=table_name, Key=item)
            assert answer["ResponseMetadata"]["HTTPHeaders"].get("server") == SERVER

    since = clients.run(puts_and_gets, per_client=12)
    assert clients.errors == [], clients.errors[:5]
    records = served(cluster, since, {"GetItem", "PutItem"})
    assert len(records) == 12 * len(clients.clients)
    assert set(nodes_of(records)) == set(cluster.addresses)
    assert_round_robin(records, cluster.addresses, "SDK requests through the Gateway")
    assert sum(cluster.signature_failures().values()) == 0, cluster.signature_failure_reasons()[:3]
