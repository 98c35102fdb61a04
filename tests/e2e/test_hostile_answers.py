"""Hostile /localnodes answers are refused or capped, never trusted: huge,
thousands of addresses, outside allowed_cidrs. (Nesting, encoding and
link-local entries are proven in the core: localnodes.rs, poller/tests.rs.)"""

from __future__ import annotations

import json

import pytest

from harness import net
from harness.proxy import Load, counts_since, create_table, sleep_intervals, start_proxied, wait_discovered

HUGE = b"[" + b'"10.0.0.1",' * 120_000 + b'"10.0.0.2"]'  # about 1.4 MiB


@pytest.mark.parametrize("body,expect", [
    (HUGE, "exceeds the 1048576-byte limit"),
], ids=["huge"])
def test_hostile_answer_is_refused_and_the_list_kept(make_cluster, make_envoy, dynamodb, table_name, body, expect):
    p = start_proxied(make_cluster, make_envoy, refresh_interval_ms=300)
    wait_discovered(p, 3)
    create_table(dynamodb(p.endpoint), table_name)
    p.cluster.set_localnodes_body(body)
    net.wait_for(lambda: expect in p.envoy.log_text(), timeout=5, message=f"a warning '{expect}'")
    with Load(lambda: dynamodb(p.endpoint), table_name) as load:
        before = p.cluster.requests_per_node()
        sleep_intervals(p, 4)
    assert load.errors == []
    assert all(n > 0 for n in counts_since(p.cluster, before).values())
    assert p.envoy.stat("wasmcustom.alternator_lb.nodes_known") == 3


def test_thousands_of_addresses_are_capped_and_outsiders_dropped(make_cluster, make_envoy):
    cluster = make_cluster(n_nodes=3)
    prefix = cluster.addresses[0].rsplit(".", 2)[0]  # 127.A
    p = start_proxied(make_cluster, make_envoy, cluster=cluster, refresh_interval_ms=300,
                      allowed_cidrs=[f"{prefix}.0.0/16"])
    wait_discovered(p, 3)
    many = [f"{prefix}.{i // 250 + 1}.{i % 250 + 1}" for i in range(3000)] + ["192.0.2.1", "10.1.2.3"]
    p.cluster.set_localnodes_body(json.dumps(many).encode())
    net.wait_for(lambda: p.envoy.stat("wasmcustom.alternator_lb.nodes_known") == 1024, timeout=5,
                 message="the list capped at 1024 nodes")
    log = p.envoy.log_text()
    assert "nodes beyond the limit of 1024" in log
    assert "192.0.2.1 is outside allowed_cidrs" in log and "10.1.2.3 is outside allowed_cidrs" in log

