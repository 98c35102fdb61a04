"""Key route affinity never hangs a write (issue 13): an Envoy whose Wasm
filter config lacks `allow_on_headers_stop_iteration` (what Istio's
WasmPlugin and Envoy Gateway produce) never hands the filter the body of a
request whose headers it paused. The filter notices within its hold timeout,
sends the write on without affinity, stops holding writes, and says once
what is missing."""

from __future__ import annotations

import time

from harness import net
from harness.filter_config import wasm_plugin
from harness.proxy import create_table

HOLD_TIMEOUT_S = 0.3  # core/src/poller.rs HOLD_TIMEOUT_MS
FAST = {"refresh_interval_ms": 500}


def without_stop_iteration(config: dict) -> dict:
    wasm_plugin(config).pop("allow_on_headers_stop_iteration")
    return config


def test_a_held_write_without_the_envoy_flag_goes_on_and_holding_stops(
        make_cluster, proxied, dynamodb, table_name):
    cluster = make_cluster(n_nodes=3)
    create_table(dynamodb(cluster.endpoint(0)), table_name)
    p = proxied(cluster=cluster, edit_config=without_stop_iteration, key_route_affinity="rmw",
                partition_keys={table_name: "pk"}, **FAST)
    p.wait_discovered()
    # One attempt and a read timeout far below boto3's 60 s: a hung write
    # fails the test with the SDK's error, not with a measured time.
    client = dynamodb(p.endpoint, read_timeout=10, retries={"max_attempts": 1, "mode": "standard"})

    def conditional_put(i: int) -> float:
        t0 = time.monotonic()
        client.put_item(TableName=table_name,
                        Item={"pk": {"S": f"k{i}"}, "sk": {"S": "s"}, "v": {"N": str(i)}},
                        ConditionExpression="attribute_not_exists(pk)")
        return time.monotonic() - t0

    first = conditional_put(0)
    later = [conditional_put(i) for i in range(1, 6)]
    print(f"\nthe first held write waited {first * 1000:.0f} ms without the Envoy flag "
          f"(hold timeout {HOLD_TIMEOUT_S * 1000:.0f} ms plus at most a tick of "
          f"{FAST['refresh_interval_ms'] // 10} ms); the next five took "
          f"{', '.join(f'{t * 1000:.0f}' for t in later)} ms")
    s = lambda name: p.envoy.stat("wasmcustom.alternator_lb." + name)  # noqa: E731
    # Counters are flushed on each VM's tick.
    net.wait_for(lambda: s("requests_routed") >= 6 and s("requests_hold_timeout") == 1, timeout=5,
                 message="the writes and the hold timeout to be counted")
    # The first write was held, timed out and went on; no later one was held.
    assert s("affinity_held") == 1, p.envoy.stats("alternator_lb")
    assert s("requests_hold_timeout") == 1, p.envoy.stats("alternator_lb")
    # Every write reached a node exactly once.
    puts = [r for r in cluster.dynamodb_requests() if r.operation == "PutItem"]
    assert len(puts) == 6, puts
    log = p.envoy.log_text()
    assert log.count("got no body within 300 ms") == 1, "said once, by one VM"
    assert "allow_on_headers_stop_iteration" in log
