"""The Istio egress gateway of examples/istio, as istiod configures it, in
front of a simulated Alternator cluster: Envoy 1.40 runs the listeners,
clusters, routes and extension configurations that istiod's own generator
made of the example (tests/mesh/golden/istio, scripts/mesh-golden), changed
only as tests/mesh/istio_gateway.py lists (the istio-agent's rewrite of the
Wasm code to a local file, istio-proxy-only filters removed, loopback
addresses, plain HTTP instead of the sidecars' mutual TLS).

Applications reach the gateway as they would through their sidecar: boto3
with the endpoint ``http://alternator.example:8000``, the address the
gateway's route serves and the SDK signs, sent to the gateway's listener
(an HTTP proxy setting of the SDK: only the connection goes elsewhere, the
request and its Host header are the application's).

Round robin is pinned in the filter's configuration: the subject is the
configuration, and round robin makes the spread exact per worker
(harness.traffic.assert_round_robin).
"""

from __future__ import annotations

import json
import time

import pytest

import istio_gateway
from harness import net
from harness.envoy import on_free_ports
from harness.affinity_ref import ClusterRing
from harness.filter_config import build_wasm
from harness.proxy import Proxied, create_table
from harness.recording_server import RecordingServer
from harness.traffic import (Clients, assert_round_robin, nodes_of, send_raw, served, signed_headers,
                             wait_served_by)

#: Where the applications send their requests (examples/istio, README step 6).
ENDPOINT = "http://alternator.example:8000"
SERVER = "ScyllaDB Alternator (test)"
WRITES = {"PutItem", "UpdateItem", "DeleteItem"}


@pytest.fixture
def partner():
    """The stand-in for the partner's external service (partner.yaml)."""
    with RecordingServer() as server:
        yield server


def start_gateway(variant: str, make_cluster, make_envoy, tmp_path, partner: RecordingServer,
                  n_nodes: int = 3) -> Proxied:
    """Envoy on the variant's gateway configuration; ``p.partner_port`` is
    the partner's listener's port (None on the dedicated gateway)."""
    cluster = make_cluster(n_nodes=n_nodes)

    def start():
        ports = {li["name"]: net.free_port() for li in istio_gateway.golden(variant, "listeners")}
        config, _ = istio_gateway.bootstrap(
            variant, workdir=tmp_path / f"istio-{variant}", listener_ports=ports, admin_port=net.free_port(),
            wasm=build_wasm(), partner_backend=(partner.address, partner.port),
            filter_keys={"seeds": cluster.addresses[:2], "port": cluster.port,
                         "allowed_cidrs": [cluster.addresses[0].rsplit(".", 1)[0] + ".0/24"],
                         "load_balancing": "round_robin"})
        return make_envoy(config, concurrency=2), config, ports

    envoy, config, ports = on_free_ports(start)
    listener = istio_gateway.listener_named(config["static_resources"]["listeners"],
                                            istio_gateway.ALTERNATOR_LISTENER)
    stat_prefix = istio_gateway.hcm_of(listener)["statPrefix"]
    port = ports[istio_gateway.ALTERNATOR_LISTENER]
    p = Proxied(cluster, envoy, f"http://127.0.0.1:{port}", 1.0, stat_prefix=stat_prefix)
    p.partner_port = ports.get(istio_gateway.PARTNER_LISTENER)
    # The waits judge batches by this counter of failed answers.
    assert f"http.{stat_prefix}.downstream_rq_5xx" in envoy.stats(), sorted(envoy.stats())[:20]
    net.wait_for(lambda: f"discovered {n_nodes} nodes" in envoy.log_text(), timeout=15,
                 message=f"the filter in the gateway to discover {n_nodes} nodes")
    return p


def app_client(dynamodb, p: Proxied, **config):
    """An application's DynamoDB client, its connections to the gateway."""
    return dynamodb(ENDPOINT, proxies={"http": p.endpoint}, **config)


def get_items(table: str):
    def call(client, i, j):
        client.get_item(TableName=table, Key={"pk": {"S": f"c{i}"}, "sk": {"S": str(j)}})
    return call


def ready(p: Proxied, clients: Clients, table: str) -> None:
    """Every worker's reads go to every node."""
    n = len(p.cluster.addresses)
    wait_served_by(p, clients, lambda: clients.run(get_items(table), per_client=n), p.cluster.addresses,
                   operations={"GetItem"}, what="discovery of every node in every worker")


def assert_signed_host_reached_the_nodes(p: Proxied, records) -> None:
    """The nodes saw the Host the SDK signed, and checked every signature."""
    assert records
    for r in records:
        host = next(v for k, v in r.headers if k.lower() == "host")
        assert host == "alternator.example:8000", host
    assert sum(p.cluster.signature_failures().values()) == 0, p.cluster.signature_failure_reasons()[:3]


@pytest.mark.parametrize("variant", ["wasmplugin", "dedicated"])
def test_the_wasmplugin_gateway_spreads_sdk_traffic_and_passes_the_server_header(
        variant, make_cluster, make_envoy, dynamodb, table_name, tmp_path, partner):
    p = start_gateway(variant, make_cluster, make_envoy, tmp_path, partner)
    p.cluster.server_header = SERVER
    create_table(dynamodb(p.cluster.endpoint(0)), table_name)
    clients = Clients(p, lambda: app_client(dynamodb, p), count=4)
    ready(p, clients, table_name)

    def puts_and_gets(client, i, j):
        item = {"pk": {"S": f"c{i}"}, "sk": {"S": str(j)}}
        if j % 2:
            client.put_item(TableName=table_name, Item={**item, "v": {"N": str(j)}})
        else:
            answer = client.get_item(TableName=table_name, Key=item)
            assert answer["ResponseMetadata"]["HTTPHeaders"].get("server") == SERVER, \
                answer["ResponseMetadata"]["HTTPHeaders"]

    since = clients.run(puts_and_gets, per_client=12)
    assert clients.errors == [], clients.errors[:5]
    records = served(p.cluster, since, {"GetItem", "PutItem"})
    assert len(records) == 12 * len(clients.clients)
    assert set(nodes_of(records)) == set(p.cluster.addresses), nodes_of(records)
    assert_round_robin(records, p.cluster.addresses, "SDK requests through the gateway")
    assert_signed_host_reached_the_nodes(p, records)
    # The filter's discovery went through istiod's discovery cluster, the
    # requests through its data cluster, as the filter counts them (its
    # counters are published on its tick).
    stat = lambda name: p.envoy.stat("wasmcustom.alternator_lb." + name)  # noqa: E731
    assert stat("discovery_successes") > 0
    net.wait_for(lambda: stat("requests_routed") >= len(records), timeout=5,
                 message="the filter to count the requests it routed")
    # (Istio names the cluster's stats by its alt_stat_name.)
    assert p.envoy.stat("cluster.outbound|8000||alternator.example;.upstream_rq_completed") >= len(records)


def test_without_a_server_header_the_gateway_adds_none(make_cluster, make_envoy, dynamodb, table_name,
                                                       tmp_path, partner):
    """Alternator's default: no Server header. Istio's gateway would put
    its own ("istio-envoy") in its place, but for the EnvoyFilter
    alternator-lb-gateway."""
    p = start_gateway("wasmplugin", make_cluster, make_envoy, tmp_path, partner, n_nodes=2)
    assert p.cluster.server_header is None
    client = app_client(dynamodb, p)
    create_table(client, table_name)
    for i in range(4):
        answer = client.get_item(TableName=table_name, Key={"pk": {"S": "k"}, "sk": {"S": str(i)}})
        assert "server" not in answer["ResponseMetadata"]["HTTPHeaders"], answer["ResponseMetadata"]


def one_key_per_node(ring: ClusterRing) -> list[dict]:
    found: dict[str, dict] = {}
    for i in range(1000):
        key = {"S": f"user{i}"}
        found.setdefault(ring.node(key), key)
        if len(found) == len(ring.ring):
            return list(found.values())
    raise AssertionError("no key for some node")


def test_the_affinity_gateway_sends_each_keys_writes_to_its_node(make_cluster, make_envoy, dynamodb,
                                                                 table_name, tmp_path, partner):
    p = start_gateway("affinity", make_cluster, make_envoy, tmp_path, partner, n_nodes=4)
    p.cluster.server_header = SERVER
    ring = ClusterRing(p.cluster.addresses, p.cluster.port)
    clients = Clients(p, lambda: app_client(dynamodb, p), count=4)
    # The example sets no partition_keys: the filter learns the table's key
    # from the CreateTable answer passing through the gateway.
    create_table(clients.clients[0], table_name)
    ready(p, clients, table_name)
    keys = one_key_per_node(ring)

    def rmw_writes(client, i, j):
        key, op = keys[(j // 3) % len(keys)], j % 3
        if op == 0:
            client.put_item(TableName=table_name, Item={"pk": key, "sk": {"S": f"c{i}"}},
                            ConditionExpression="attribute_not_exists(locked)")
        elif op == 1:
            client.update_item(TableName=table_name, Key={"pk": key, "sk": {"S": "counter"}},
                               UpdateExpression="ADD n :one", ExpressionAttributeValues={":one": {"N": "1"}})
        else:
            answer = client.delete_item(TableName=table_name, Key={"pk": key, "sk": {"S": f"c{i}"}},
                                        ConditionExpression="attribute_exists(pk)")
            assert answer["ResponseMetadata"]["HTTPHeaders"].get("server") == SERVER

    # The key learned on one worker reaches the others on their tick: wait
    # until every worker sends the first key's writes to its node.
    wait_served_by(p, clients, lambda: clients.run(rmw_writes, per_client=3), [ring.node(keys[0])],
                   operations=WRITES, what="every worker to route by the learned partition key")

    since = clients.run(rmw_writes, per_client=3 * len(keys))
    assert clients.errors == [], clients.errors[:5]
    for key in keys:
        got = nodes_of(served(p.cluster, since, WRITES, key=key, table=table_name))
        assert got == {ring.node(key): 3 * len(clients.clients)}, \
            f"key {key}: every write on {ring.node(key)} expected, got {got}"
    assert len({ring.node(k) for k in keys}) == len(p.cluster.addresses)

    # Reads are spread as usual.
    since = clients.run(get_items(table_name), per_client=8)
    assert clients.errors == [], clients.errors[:5]
    reads = served(p.cluster, since, {"GetItem"})
    assert_round_robin(reads, p.cluster.addresses, "reads through the affinity gateway")
    assert_signed_host_reached_the_nodes(p, served(p.cluster, 0, WRITES | {"GetItem"}))

    # The writes were held for their bodies, which arrived: Envoy let the
    # filter hold them (allow_on_headers_stop_iteration from the EnvoyFilter).
    stat = lambda name: p.envoy.stat("wasmcustom.alternator_lb." + name)  # noqa: E731
    held = 3 * len(keys) * len(clients.clients)
    net.wait_for(lambda: stat("affinity_held") >= held, timeout=5,
                 message=f"the filter to count {held} writes held for their key")
    assert stat("requests_hold_timeout") == 0


@pytest.mark.parametrize("variant", ["wasmplugin", "affinity"])
def test_the_shared_gateway_passes_the_partners_requests_untouched(variant, make_cluster, make_envoy,
                                                                   dynamodb, table_name, tmp_path, partner):
    """Another team's egress through the same gateway (partner.yaml): its
    requests reach its service as they were sent, answers come back as the
    service gave them, and no Alternator node sees one. With the WasmPlugin
    the filter is in that traffic's filter chain too (it selects pods, not
    hosts) and passes it ("hosts"), counted in requests_passed; the
    affinity EnvoyFilter installs the filter in Alternator's chain only."""
    p = start_gateway(variant, make_cluster, make_envoy, tmp_path, partner)
    assert p.partner_port is not None
    client = app_client(dynamodb, p)
    create_table(client, table_name)
    since = time.monotonic()
    # A DynamoDB-shaped, signed write among them: the kind of request the
    # filter would route (or hold, with affinity) were it Alternator's.
    write = json.dumps({"TableName": table_name, "Item": {"pk": {"S": "x"}, "sk": {"S": "y"}},
                        "ConditionExpression": "attribute_not_exists(pk)"}).encode()
    requests = [
        ("GET", "/v1/status?verbose=1", [("Host", "api.partner.example"), ("X-Trace", "abc")], b""),
        ("POST", "/", list(signed_headers("http://api.partner.example", "PutItem", write).items()), write),
        ("PUT", "/v1/Blob", [("Host", "api.partner.example:80"), ("Content-Type", "text/plain")],
         b"hello\r\n" * 1000),
    ]
    for method, path, headers, body in requests:
        status, answer_headers, answer = send_raw(p.partner_port, method, path, headers, body)
        assert status == 200, (method, path, status, answer[:300])
        assert answer == f"other service: {method} {path}".encode()
        # The partner's chain keeps Istio's own setting: the gateway names
        # itself (alternator-lb-gateway's PASS_THROUGH is Alternator's only).
        assert answer_headers.get("server") == "istio-envoy", answer_headers
    received = partner.received
    assert [(r.method, r.path, r.body) for r in received] == [(m, pa, b) for m, pa, _, b in requests]
    for (_, _, headers, _), got in zip(requests, received):
        for k, v in headers:
            assert got.header(k) == v, (k, v, got.headers)
    assert served(p.cluster, since) == [], "no partner request reached an Alternator node"

    # Alternator's own requests through the same gateway still work.
    client.get_item(TableName=table_name, Key={"pk": {"S": "k"}, "sk": {"S": "1"}})
    stat = lambda name: p.envoy.stat("wasmcustom.alternator_lb." + name)  # noqa: E731
    # Every request a node got was routed, and nothing else: the partner's
    # requests were neither routed (their health and latency would have
    # been held against a node) nor held.
    routed = len(p.cluster.dynamodb_requests())
    passed = len(requests) if variant == "wasmplugin" else 0
    net.wait_for(lambda: (stat("requests_routed"), stat("requests_passed")) == (routed, passed), timeout=5,
                 message=f"the filter to count {routed} routed and {passed} passed requests")
    assert stat("affinity_held") == 0
