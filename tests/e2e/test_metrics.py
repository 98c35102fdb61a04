"""The filter's stats as an operator reads them (issue 13): each instance's
figures under its own `stat_prefix`, local replies counted and named in the
access log, affinity counters, and the discovery latency histogram."""

from __future__ import annotations

import copy
import json

from harness import net
from harness.envoy import on_free_ports
from harness.filter_config import build_wasm, shipped_config
from harness.proxy import create_table


def with_access_log(path):
    """An access log of each request's status and response code details."""
    def edit(config: dict) -> dict:
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["access_log"] = [{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": str(path),
                "log_format": {"text_format_source": {
                    "inline_string": "%RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\n"}},
            },
        }]
        return config
    return edit


def test_requests_routed_in_panic_are_counted_and_envoy_names_their_failure(proxied, dynamodb, table_name,
                                                                             tmp_path):
    """Every node stopped: each is marked Down at its first failed connect,
    and then the filter does not answer itself (its own 503, details
    ``alternator_lb_no_node``, is only for a filter that knows no node at
    all): it keeps sending requests to the known nodes, counted in
    ``requests_routed_panic``, and Envoy's access log names each one's
    failure as Envoy saw it."""
    access_log = tmp_path / "access.log"
    # Envoy writes access logs out every 10 s by default.
    p = proxied(edit_config=with_access_log(access_log), envoy_args=["--file-flush-interval-msec", "100"],
                refresh_interval_ms=500, down_probe_interval_ms=60000)
    p.wait_discovered()
    create_table(dynamodb(p.endpoint), table_name)
    for addr in p.cluster.addresses:
        p.cluster.stop_node(addr)
    client = dynamodb(p.endpoint, retries={"max_attempts": 1, "mode": "standard"})
    # Each failed call shows a worker a node that refuses connections.
    net.wait_for(lambda: _fail_calls(client, 1) and p.envoy.stat("wasmcustom.alternator_lb.nodes_down") == 3,
                 timeout=10, message="every node Down")
    panic_before = p.envoy.stat("wasmcustom.alternator_lb.requests_routed_panic")
    assert _fail_calls(client, 10) == 10
    net.wait_for(lambda: p.envoy.stat("wasmcustom.alternator_lb.requests_routed_panic") >= panic_before + 10,
                 timeout=5, message="the panic-routed requests to be counted")
    lines = lambda: access_log.read_text().splitlines()  # noqa: E731
    net.wait_for(lambda: sum(line.startswith("503 upstream_reset_before_response_started") for line in lines())
                 >= 10, timeout=5, message="the 503s in the access log with Envoy's details")
    assert not any("alternator_lb_no_node" in line for line in lines())
    assert p.envoy.stat("wasmcustom.alternator_lb.requests_rejected_no_node") == 0
    assert p.envoy.stat("wasmcustom.alternator_lb.requests_rejected_handoff_refused") == 0


def _fail_calls(client, n: int) -> int:
    """Makes ``n`` calls, each expected to fail; returns how many did."""
    failed = 0
    for _ in range(n):
        try:
            client.list_tables()
        except Exception:  # noqa: BLE001 - the 503 is what is expected
            failed += 1
    return failed


def test_affinity_counters_and_discovery_latency_move(make_cluster, proxied, dynamodb, table_name):
    cluster = make_cluster(n_nodes=3)
    create_table(dynamodb(cluster.endpoint(0)), table_name)
    p = proxied(cluster=cluster, key_route_affinity="rmw", partition_keys={table_name: "pk"},
                refresh_interval_ms=250)
    p.wait_discovered()
    client = dynamodb(p.endpoint)
    for i in range(4):
        client.put_item(TableName=table_name, Item={"pk": {"S": f"k{i}"}, "sk": {"S": "s"}},
                        ConditionExpression="attribute_not_exists(pk)")
    for i in range(3):  # plain puts: held (the body decides), then spread as usual
        client.put_item(TableName=table_name, Item={"pk": {"S": f"p{i}"}, "sk": {"S": "s"}})
    client.get_item(TableName=table_name, Key={"pk": {"S": "k0"}, "sk": {"S": "s"}})
    s = lambda name: p.envoy.stat("wasmcustom.alternator_lb." + name)  # noqa: E731
    # Counters are flushed on each worker's tick, and a tick may fall
    # between a write's hold (headers) and its routing (body): wait for all
    # of them together.
    net.wait_for(lambda: (s("affinity_held"), s("affinity_routed_by_key"), s("affinity_fell_back")) == (7, 4, 3)
                 and s("requests_routed") >= 8, timeout=5,
                 message="7 held writes (4 routed by key, 3 fallen back) and 8 routed requests counted")
    assert s("requests_hold_timeout") == 0
    # Every /localnodes call's duration went into the histogram.
    status, body = p.envoy.admin_get("/stats?format=json&filter=discovery_latency_ms")
    assert status == 200
    histograms = [h for entry in json.loads(body)["stats"] if "histograms" in entry
                  for h in entry["histograms"].get("computed_quantiles", [])]
    names = [h["name"] for h in histograms]
    assert "wasmcustom.alternator_lb.discovery_latency_ms" in names, names


def test_two_instances_keep_their_own_figures(make_cluster, make_envoy, dynamodb, table_name):
    """Two Alternator clusters behind one Envoy, one listener and filter
    instance each, named apart by stat_prefix."""
    a, b = make_cluster(n_nodes=3), make_cluster(n_nodes=2)

    def start():
        config = copy.deepcopy(shipped_config())
        config["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=net.free_port())
        first = config["static_resources"]["listeners"][0]
        second = copy.deepcopy(first)
        second["name"] = "dynamodb_b"
        ports = []
        for listener, cluster, prefix in ((first, a, "orders"), (second, b, "users")):
            port = net.free_port()
            ports.append(port)
            listener["address"]["socket_address"].update(address="127.0.0.1", port_value=port)
            plugin = wasm_plugin_of(listener)
            plugin["name"] = plugin["root_id"] = f"alternator_lb_{prefix}"
            plugin["vm_config"]["code"]["local"]["filename"] = str(build_wasm())
            plugin["configuration"]["value"] = json.dumps(
                {"seeds": [cluster.addresses[0]], "port": cluster.port, "stat_prefix": prefix,
                 "refresh_interval_ms": 500})
        config["static_resources"]["listeners"].append(second)
        return make_envoy(config), ports

    envoy, ports = on_free_ports(start)
    net.wait_for(lambda: envoy.log_text().count("discovered") >= 2, timeout=10,
                 message="both instances to discover their nodes")
    # Each request is routed (to the seed, or to a discovered node) and
    # counted by the instance that routed it.
    for port, n in ((ports[0], 9), (ports[1], 4)):
        client = dynamodb(f"http://127.0.0.1:{port}")
        for _ in range(n):
            client.list_tables()
    s = lambda name: envoy.stat("wasmcustom.alternator_lb." + name)  # noqa: E731
    net.wait_for(lambda: s("orders.requests_routed") == 9 and s("users.requests_routed") == 4,
                 timeout=5, message="each instance's requests counted under its own name")
    assert s("orders.nodes_known") == 3
    assert s("users.nodes_known") == 2
    assert s("orders.discovery_successes") >= 1 and s("users.discovery_successes") >= 1
    # Nothing under the unprefixed names.
    assert "wasmcustom.alternator_lb.requests_routed" not in envoy.stats("alternator_lb")


def wasm_plugin_of(listener: dict) -> dict:
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return next(f for f in hcm["http_filters"] if f["name"] == "alternator_lb")["typed_config"]["config"]
