"""Hostile /localnodes answers are refused or capped, never trusted: huge,
deeply nested, not UTF-8, thousands of addresses, outside allowed_cidrs, or
naming a link-local address."""

from __future__ import annotations

import json

import pytest

from harness import net
from harness.proxy import Load, counts_since, create_table, host_stats, sleep_intervals, start_proxied, wait_discovered

HUGE = b"[" + b'"10.0.0.1",' * 120_000 + b'"10.0.0.2"]'  # about 1.4 MiB
NESTED = b"[" * 50_000 + b"]" * 50_000
NOT_UTF8 = b'["10.0.0.1", "\xff\xfe"]'


@pytest.mark.parametrize("body,expect", [
    (HUGE, "exceeds the 1048576-byte limit"),
    (NESTED, "answer is not JSON"),
    (NOT_UTF8, "answer is not UTF-8"),
], ids=["huge", "nested", "not-utf8"])
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


REFUSED = "wasmcustom.alternator_lb.discovery_entries_refused"


def test_a_link_local_entry_gets_no_request_and_no_probe(make_cluster, make_envoy, dynamodb, table_name):
    # fe80::1 without a zone index: a connection attempt would fail locally,
    # so nothing leaves the machine even if the filter tried. It is the only
    # non-loopback address any test may name.
    p = start_proxied(make_cluster, make_envoy, refresh_interval_ms=300)
    wait_discovered(p, 3)
    create_table(dynamodb(p.endpoint), table_name)
    assert p.envoy.stat(REFUSED) == 0
    p.cluster.set_localnodes_body(json.dumps(p.cluster.addresses + ["fe80::1"]).encode())
    net.wait_for(lambda: "fe80::1 is link-local, refused" in p.envoy.log_text(), timeout=5,
                 message="the warning naming fe80::1")
    first = p.envoy.stat(REFUSED)
    assert first >= 1
    with Load(lambda: dynamodb(p.endpoint), table_name) as load:
        before = p.cluster.requests_per_node()
        # Long enough for a newcomer's probe (every refresh interval while
        # Quarantined) and for it to take requests if it had been listed.
        sleep_intervals(p, 8)
        during = counts_since(p.cluster, before)
    assert load.errors == []
    assert all(n > 0 for n in during.values()) and len(during) == 3, during
    # Every answer counts it again.
    assert p.envoy.stat(REFUSED) >= first + 4
    assert p.envoy.stat("wasmcustom.alternator_lb.nodes_known") == 3
    assert p.envoy.stat("wasmcustom.alternator_lb.nodes_quarantined") == 0
    # Neither cluster ever had it as a host: no request, no probe.
    for cluster in ("alternator", "alternator_discovery"):
        hosts = host_stats(p.envoy, cluster)
        assert hosts, f"{cluster} has hosts"
        assert not [h for h in hosts if "fe80" in h], (cluster, sorted(hosts))
    status, clusters = p.envoy.admin_get("/clusters")
    assert status == 200 and "fe80" not in clusters
    warning = [line for line in p.envoy.log_text().splitlines() if "unusable entries, ignored" in line]
    assert len(warning) >= 1 and "had 1 unusable entries" in warning[0], warning
