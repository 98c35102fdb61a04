"""The Istio egress gateway's Envoy configuration, from the golden files that
istiod's own generator wrote (tests/mesh/istio-gen, scripts/mesh-golden),
made into a bootstrap the project's Envoy 1.40 runs on loopback addresses.

What the gateway pod's Envoy gets is istiod's answer as the istio-agent
passes it on; the golden files hold both (``extension_configs.json`` as
istiod sent it, ``extension_configs.agent.json`` after the agent's own
rewrite of remote Wasm code to a local file, run by the generator). Every
other difference between the golden resources and what Envoy runs here is
made by :func:`bootstrap` and listed in :data:`CHANGES`, each with its
reason; each must find something to change, so the list cannot go stale
silently. Envoy refuses a configuration naming an extension it does not
have, so an istio-proxy-only extension missing from the list fails the test
rather than passing unseen.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "mesh" / "golden" / "istio"
#: The WasmPlugin and the affinity EnvoyFilter on the shared egress gateway,
#: and the WasmPlugin on a gateway of its own (examples/istio/README.md).
VARIANTS = ("wasmplugin", "affinity", "dedicated")
#: The listener of Alternator's Gateway server (30-routing.yaml), and that
#: of another team's plain HTTP egress on the shared gateway
#: (tests/mesh/istio-gen/partner.yaml).
ALTERNATOR_LISTENER = "0.0.0.0_443"
PARTNER_LISTENER = "0.0.0.0_80"
#: The partner's external service, which istiod makes a DNS cluster of.
PARTNER_CLUSTER = "outbound|80||api.partner.example"

#: istio-proxy's own filters (built into Istio's Envoy, not upstream Envoy).
ISTIO_PROXY_HTTP_FILTERS = {
    "istio.metadata_exchange": "io.istio.http.peer_metadata.Config: istio-proxy's peer metadata "
                               "exchange (telemetry labels); not in upstream Envoy",
    "istio.alpn": "istio.envoy.config.filter.http.alpn.v2alpha1: istio-proxy's ALPN override for "
                  "mTLS to upstream sidecars; not in upstream Envoy, and the upstreams here are not "
                  "sidecars",
    "istio.stats": "stats.PluginConfig: istio-proxy's Prometheus metrics (istio_requests_total...); "
                   "not in upstream Envoy",
}
ISTIO_PROXY_CLUSTER_FILTERS = {
    "istio.metadata_exchange": "envoy.tcp.metadataexchange: istio-proxy's upstream metadata exchange; "
                               "not in upstream Envoy",
}


def golden(variant: str, kind: str) -> list[dict]:
    return json.loads((GOLDEN / variant / f"{kind}.json").read_text())


def sources() -> dict:
    return json.loads((GOLDEN / "sources.json").read_text())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listener_named(listeners: list[dict], name: str) -> dict:
    (listener,) = [li for li in listeners if li["name"] == name]
    return listener


def hcm_of(listener: dict) -> dict:
    """The HTTP connection manager of the listener's one filter chain."""
    (chain,) = listener["filterChains"]
    (f,) = [f for f in chain["filters"] if f["name"] == "envoy.filters.network.http_connection_manager"]
    return f["typedConfig"]


def wasm_config(ext: dict) -> dict:
    """The Wasm PluginConfig inside an extension configuration."""
    tc = ext["typedConfig"]
    assert tc["@type"] == "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", tc["@type"]
    return tc["config"]


@dataclass
class Change:
    what: str
    why: str
    apply: Callable[["Context"], int]   # how many things it changed


@dataclass
class Context:
    listeners: list[dict]
    clusters: list[dict]
    routes: list[dict]
    extensions: list[dict]
    workdir: Path
    #: Loopback port of each golden listener, by its name.
    listener_ports: dict[str, int]
    #: Where the stand-in for the partner's external service listens.
    partner_backend: tuple[str, int]
    wasm: Path
    agent_module_path: str
    filter_keys: dict
    #: Files of the resources served over ADS in the pod, by name.
    files: dict[str, Path]


def _remove_istio_http_filters(c: Context) -> int:
    n = 0
    for listener in c.listeners:
        hcm = hcm_of(listener)
        before = len(hcm["httpFilters"])
        hcm["httpFilters"] = [f for f in hcm["httpFilters"] if f["name"] not in ISTIO_PROXY_HTTP_FILTERS]
        n += before - len(hcm["httpFilters"])
    return n


def _remove_istio_cluster_filters(c: Context) -> int:
    n = 0
    for cluster in c.clusters:
        filters = cluster.get("filters", [])
        kept = [f for f in filters if f["name"] not in ISTIO_PROXY_CLUSTER_FILTERS]
        n += len(filters) - len(kept)
        if filters:
            cluster["filters"] = kept
            if not kept:
                del cluster["filters"]
    return n


def _listener_to_loopback(c: Context) -> int:
    assert {li["name"] for li in c.listeners} == set(c.listener_ports), [li["name"] for li in c.listeners]
    for listener in c.listeners:
        listener["address"]["socketAddress"].update(address="127.0.0.1",
                                                   portValue=c.listener_ports[listener["name"]])
    return len(c.listeners)


def _plain_http_to_the_gateway(c: Context) -> int:
    n = 0
    for listener in c.listeners:
        for chain in listener["filterChains"]:
            if chain.pop("transportSocket", None) is not None:
                n += 1
            match = chain.get("filterChainMatch", {})
            if match.pop("serverNames", None) is not None:
                n += 1
                if not match:
                    del chain["filterChainMatch"]
    return n


#: The gateways' own Kubernetes Services (tests/mesh/istio-gen/cluster.yaml).
GATEWAY_SERVICES = {"istio-egressgateway.istio-egress.svc.cluster.local",
                    "alternator-egress.istio-egress.svc.cluster.local"}


def _cluster_host(cluster: dict) -> str | None:
    services = cluster.get("metadata", {}).get("filterMetadata", {}).get("istio", {}).get("services", [])
    return services[0]["host"] if len(services) == 1 else None


def _drop_gateway_service_clusters(c: Context) -> int:
    kept = [cl for cl in c.clusters if not (cl.get("type") == "EDS" and _cluster_host(cl) in GATEWAY_SERVICES)]
    n = len(c.clusters) - len(kept)
    c.clusters[:] = kept
    return n


def _partner_to_loopback(c: Context) -> int:
    (cluster,) = [cl for cl in c.clusters if cl["name"] == PARTNER_CLUSTER]
    assert cluster["type"] == "STRICT_DNS", cluster["type"]
    (locality,) = cluster["loadAssignment"]["endpoints"]
    (endpoint,) = locality["lbEndpoints"]
    address = endpoint["endpoint"]["address"]["socketAddress"]
    assert address == {"address": "api.partner.example", "portValue": 80}, address
    cluster["type"] = "STATIC"
    for dns in ("dnsLookupFamily", "dnsRefreshRate", "dnsJitter", "respectDnsTtl"):
        cluster.pop(dns, None)
    host, port = c.partner_backend
    address.update(address=host, portValue=port)
    return 1


def _ads_to_files(c: Context) -> int:
    """RDS and ECDS from files (written by :func:`bootstrap` once every
    change is made) holding exactly the resources ADS would carry."""
    n = 0

    def from_file(source: dict, name: str) -> dict:
        nonlocal n
        assert "ads" in source, source
        path = c.workdir / (name.replace("/", "_").replace("~", "_") + ".json")
        c.files[name] = path
        n += 1
        out = {k: v for k, v in source.items() if k != "ads"}
        out["pathConfigSource"] = {"path": str(path)}
        return out

    for listener in c.listeners:
        hcm = hcm_of(listener)
        rds = hcm["rds"]
        rds["configSource"] = from_file(rds["configSource"], rds["routeConfigName"])
        for f in hcm["httpFilters"]:
            if "configDiscovery" in f:
                cd = f["configDiscovery"]
                cd["configSource"] = from_file(cd["configSource"], f["name"])
    return n


def _module_here(c: Context) -> int:
    n = 0
    for ext in c.extensions:
        code = wasm_config(ext)["vmConfig"]["code"]
        if code.get("local", {}).get("filename") == c.agent_module_path:
            code["local"]["filename"] = str(c.wasm)
            n += 1
    return n


def _filter_to_the_simulated_nodes(c: Context) -> int:
    for ext in c.extensions:
        config = wasm_config(ext)["configuration"]
        doc = json.loads(config["value"])
        config["value"] = json.dumps({**doc, **c.filter_keys})
    return len(c.extensions)


#: Everything that differs between the golden files and what Envoy runs,
#: in order.
CHANGES = [
    Change("the extension configurations as the istio-agent passes them on "
           "(extension_configs.agent.json), its module file replaced by target/alternator_lb.wasm",
           "the agent pulls the WasmPlugin's OCI image and names the local file (the generator runs the "
           "agent's own rewrite, pkg/wasm, with a cache that pulls nothing); no registry here",
           _module_here),
    Change("HTTP filters " + ", ".join(ISTIO_PROXY_HTTP_FILTERS) + " removed",
           "; ".join(ISTIO_PROXY_HTTP_FILTERS.values()), _remove_istio_http_filters),
    Change("cluster filters " + ", ".join(ISTIO_PROXY_CLUSTER_FILTERS) + " removed",
           "; ".join(ISTIO_PROXY_CLUSTER_FILTERS.values()), _remove_istio_cluster_filters),
    Change("the gateway's listeners on 127.0.0.1 and free ports instead of 0.0.0.0:443 (Alternator's "
           "server) and 0.0.0.0:80 (the partner's, shared gateway only)",
           "only loopback addresses here; tests run side by side", _listener_to_loopback),
    Change("the listener's DownstreamTlsContext (ISTIO_MUTUAL, certificates over SDS from the istio-agent) "
           "and its SNI match (server_names alternator.example) removed: plain HTTP to the gateway",
           "the sidecars' mutual TLS hop is not part of this test; there is no SDS server, and "
           "plain HTTP has no SNI to match", _plain_http_to_the_gateway),
    Change(f"the partner's DNS cluster ({PARTNER_CLUSTER}, tests/mesh/istio-gen/partner.yaml) made "
           "STATIC at a loopback stand-in for api.partner.example:80",
           "no name resolves to a service outside this machine here, and nothing may leave it",
           _partner_to_loopback),
    Change("the EDS clusters of the gateways' own Services (" + ", ".join(sorted(GATEWAY_SERVICES))
           + ", their ports and subsets) removed",
           "their endpoints come from istiod over ADS, absent here; they serve the sidecars' hop to the "
           "gateway, and no route of the gateway leads to them (any other EDS cluster stays, and Envoy "
           "refuses it without ADS)", _drop_gateway_service_clusters),
    Change("RDS and ECDS read from files (path_config_source) instead of ADS, the golden resources verbatim",
           "no istiod here; the same resources, delivered from a file instead of the gRPC stream",
           _ads_to_files),
    Change("the filter's seeds, port and allowed_cidrs set to the simulated nodes', and load_balancing "
           "pinned to round_robin",
           "the example's 10.0.0.x addresses are not on this machine; round robin makes the spread exact "
           "(this test's subject is the configuration, not the balancing)",
           _filter_to_the_simulated_nodes),
]


def only_loopback(filter_config: dict) -> None:
    """The filter may reach nothing but this machine's loopback addresses."""
    for seed in filter_config["seeds"]:
        assert ipaddress.ip_address(seed).is_loopback, f"seed {seed} is not a loopback address"
    for cidr in filter_config["allowed_cidrs"]:
        assert ipaddress.ip_network(cidr).subnet_of(ipaddress.ip_network("127.0.0.0/8")), cidr


def bootstrap(variant: str, *, workdir: Path, listener_ports: dict[str, int], admin_port: int,
              wasm: Path, partner_backend: tuple[str, int],
              filter_keys: dict[str, Any]) -> tuple[dict, Context]:
    """An Envoy bootstrap (static listeners and clusters, RDS and ECDS from
    files in ``workdir``) from the golden files of ``variant``, changed by
    :data:`CHANGES` and nothing else. ``listener_ports`` gives each golden
    listener's loopback port, by name."""
    workdir.mkdir(parents=True, exist_ok=True)
    src = sources()
    c = Context(
        listeners=copy.deepcopy(golden(variant, "listeners")),
        clusters=copy.deepcopy(golden(variant, "clusters")),
        routes=copy.deepcopy(golden(variant, "routes")),
        extensions=copy.deepcopy(golden(variant, "extension_configs.agent")),
        workdir=workdir, listener_ports=listener_ports, partner_backend=partner_backend, wasm=wasm,
        agent_module_path=src["agent"]["module_path"], filter_keys=filter_keys, files={})
    for change in CHANGES:
        changed = change.apply(c)
        assert changed > 0, f"{variant}: nothing to change for: {change.what}"
    for ext in c.extensions:
        only_loopback(json.loads(wasm_config(ext)["configuration"]["value"]))
    by_name = {r["name"]: r for r in c.routes} | {e["name"]: e for e in c.extensions}
    for name, path in c.files.items():
        path.write_text(json.dumps({"versionInfo": "1", "resources": [by_name[name]]}))
    for listener in c.listeners:
        listener.pop("@type")
    for cluster in c.clusters:
        cluster.pop("@type")
    config = {
        # As the istio-agent's bootstrap names the node (the pod's identity).
        "node": {"id": src["proxies"][variant]["id"], "cluster": src["proxies"][variant]["cluster"]},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": c.listeners, "clusters": c.clusters},
    }
    return config, c
