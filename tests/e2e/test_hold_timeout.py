"""Key route affinity never hangs a write (issue 13), and no single client
can switch it off (issue 18).

An Envoy whose Wasm filter config lacks `allow_on_headers_stop_iteration`
(what Istio's WasmPlugin and Envoy Gateway produce) never hands the filter
the body of a request whose headers it paused. The filter sends a held
write whose body has not started within its hold timeout on without
affinity; a worker that never saw a held write's body and whose last three
held writes all timed out stops holding writes (trying again a minute
later), and says once what is missing.

A slow client on an Envoy that has the flag times out the same way, but
its body does come: that shows the worker that Envoy hands bodies over, so
affinity stays on for everyone else (before issue 18, one such write
switched it off in every worker until Envoy restarted).

Round robin is pinned: balancing is not the subject.
"""

from __future__ import annotations

import json
import time

from harness import net
from harness.affinity_ref import ClusterRing
from harness.filter_config import wasm_plugin
from harness.proxy import create_table
from harness.traffic import Clients, SplitRequest, nodes_of, served

HOLD_TIMEOUT_S = 0.3  # core/src/poller.rs HOLD_TIMEOUT_MS
TIMEOUTS_TO_STOP = 3  # core/src/hold.rs
FAST = {"refresh_interval_ms": 500, "load_balancing": "round_robin"}


def without_stop_iteration(config: dict) -> dict:
    wasm_plugin(config).pop("allow_on_headers_stop_iteration")
    return config


def test_without_the_envoy_flag_held_writes_go_on_and_holding_stops_after_three(
        make_cluster, proxied, dynamodb, table_name):
    cluster = make_cluster(n_nodes=3)
    create_table(dynamodb(cluster.endpoint(0)), table_name)
    p = proxied(cluster=cluster, edit_config=without_stop_iteration, key_route_affinity="rmw",
                partition_keys={table_name: "pk"}, **FAST)
    p.wait_discovered()
    # One attempt and a read timeout far below boto3's 60 s: a hung write
    # fails the test with the SDK's error, not with a measured time. One
    # client: one connection, so one worker decides.
    client = dynamodb(p.endpoint, read_timeout=10, retries={"max_attempts": 1, "mode": "standard"})

    def conditional_put(i: int) -> float:
        t0 = time.monotonic()
        client.put_item(TableName=table_name,
                        Item={"pk": {"S": f"k{i}"}, "sk": {"S": "s"}, "v": {"N": str(i)}},
                        ConditionExpression="attribute_not_exists(pk)")
        return time.monotonic() - t0

    took = [conditional_put(i) for i in range(TIMEOUTS_TO_STOP + 3)]
    print(f"\nwithout the Envoy flag the first {TIMEOUTS_TO_STOP} held writes waited "
          f"{', '.join(f'{t * 1000:.0f}' for t in took[:TIMEOUTS_TO_STOP])} ms (hold timeout "
          f"{HOLD_TIMEOUT_S * 1000:.0f} ms plus at most a tick of {FAST['refresh_interval_ms'] // 10} ms); "
          f"the next ones, not held, took {', '.join(f'{t * 1000:.0f}' for t in took[TIMEOUTS_TO_STOP:])} ms")
    s = lambda name: p.envoy.stat("wasmcustom.alternator_lb." + name)  # noqa: E731
    # Counters are flushed on each VM's tick.
    net.wait_for(lambda: s("requests_routed") >= len(took) and s("requests_hold_timeout") == TIMEOUTS_TO_STOP,
                 timeout=5, message="the writes and the hold timeouts to be counted")
    # The first three writes were held, timed out and went on; no later one
    # was held.
    assert s("affinity_held") == TIMEOUTS_TO_STOP, p.envoy.stats("alternator_lb")
    assert all(t >= HOLD_TIMEOUT_S for t in took[:TIMEOUTS_TO_STOP]), took
    # Every write reached a node exactly once.
    puts = [r for r in cluster.dynamodb_requests() if r.operation == "PutItem"]
    assert len(puts) == len(took), puts
    log = p.envoy.log_text()
    assert log.count("got no body within 300 ms") == 1, "said once, by the worker that stopped"
    assert "allow_on_headers_stop_iteration" in log


def slow_put(p, table: str, key: str) -> None:
    """A conditional PutItem whose body comes 0.7 s after its headers."""
    doc = {"TableName": table, "Item": {"pk": {"S": key}, "sk": {"S": "s"}},
           "ConditionExpression": "attribute_not_exists(pk)"}
    body = json.dumps(doc).encode()
    with SplitRequest(p.endpoint, "PutItem", body, first=0) as r:
        time.sleep(0.7)
        status, answer = r.finish()
    # Its own write is answered, sent on without affinity.
    assert status == 200, answer[:300]


def test_a_slow_client_leaves_affinity_on_for_the_others(make_cluster, proxied, dynamodb, table_name):
    cluster = make_cluster(n_nodes=4)
    create_table(dynamodb(cluster.endpoint(0)), table_name)
    # The shipped configuration: Envoy hands the filter held bodies.
    p = proxied(cluster=cluster, key_route_affinity="rmw", partition_keys={table_name: "pk"}, **FAST)
    p.wait_discovered()
    ring = ClusterRing(cluster.addresses, cluster.port)
    s = lambda name: p.envoy.stat("wasmcustom.alternator_lb." + name)  # noqa: E731
    keys = []
    for i in range(1000):
        key = {"S": f"other{i}"}
        if ring.node(key) not in {ring.node(k) for k in keys}:
            keys.append(key)
        if len(keys) == len(cluster.addresses):
            break
    clients = Clients(p, lambda: dynamodb(p.endpoint), count=4)

    def conditional_put(client, i, j):
        client.put_item(TableName=table_name, Item={"pk": keys[(i + j) % len(keys)], "sk": {"S": f"c{i}-{j}"}},
                        ConditionExpression="attribute_not_exists(locked)")

    def others_write_by_key(per_client: int) -> dict:
        routed_before = s("affinity_routed_by_key")
        since = clients.run(conditional_put, per_client=per_client)
        assert clients.errors == [], clients.errors[:5]
        writes = served(cluster, since, {"PutItem"})
        assert len(writes) == per_client * len(clients.clients), writes
        for key in keys:
            got = nodes_of(served(cluster, since, {"PutItem"}, key=key))
            assert set(got) == {ring.node(key)}, f"key {key}: expected {ring.node(key)}, got {got}"
        net.wait_for(lambda: s("affinity_routed_by_key") == routed_before + len(writes), timeout=5,
                     message="the writes to be counted as routed by key")
        return nodes_of(writes)

    # One client sends a conditional write's body 0.7 s after its headers:
    # it times out, and goes on without affinity.
    slow_since = time.monotonic()
    slow_put(p, table_name, "slow0")
    assert len(served(cluster, slow_since, {"PutItem"})) == 1
    net.wait_for(lambda: s("requests_hold_timeout") == 1, timeout=5,
                 message="the slow write to be counted as a hold timeout")
    # The next 20 conditional writes from other clients (on every worker)
    # are routed by key.
    first = others_write_by_key(per_client=5)
    # Every worker has now seen held writes' bodies come in time: more slow
    # writes, as many as would stop a worker that never had, change nothing.
    for i in range(1, TIMEOUTS_TO_STOP + 1):
        slow_put(p, table_name, f"slow{i}")
    net.wait_for(lambda: s("requests_hold_timeout") == TIMEOUTS_TO_STOP + 1, timeout=5,
                 message="the slow writes to be counted as hold timeouts")
    again = others_write_by_key(per_client=2)
    print(f"\nafter a slow client's write timed out, the next 20 conditional writes of 4 other clients "
          f"went to their keys' nodes: {first}; after {TIMEOUTS_TO_STOP} more slow writes, 8 more did: {again}")
    assert "got no body" not in p.envoy.log_text()
