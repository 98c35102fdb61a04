"""Hostile /localnodes answers through a real Envoy: what Envoy hands the
filter of an answer larger than the filter reads (its size, so it is
refused unread), and a full-size discovery record (1024 nodes) in Envoy's
shared data.

How answers are parsed, capped and filtered (nesting, encoding, refused
addresses, allowed_cidrs) is proven in the core: localnodes.rs
deep_nesting_is_refused_not_recursed, unusable_answers_are_errors,
node_count_is_capped, addresses_outside_allowed_ranges_are_dropped,
link_local_addresses_are_refused_and_counted; poller/tests.rs
refused_entries_are_dropped_counted_and_never_contacted,
an_answer_naming_only_refused_addresses_keeps_the_list_and_counts.
"""

from __future__ import annotations

import json

from harness import net
from harness.proxy import wait_routed

HUGE = b"[" + b'"10.0.0.1",' * 120_000 + b'"10.0.0.2"]'  # about 1.4 MiB
S = "wasmcustom.alternator_lb."


def test_an_answer_over_the_size_limit_is_refused_and_the_list_kept(proxied):
    p = proxied(refresh_interval_ms=300, load_balancing="round_robin")
    p.wait_discovered()
    failures = p.envoy.stat(S + "discovery_failures")
    p.cluster.set_localnodes_body(HUGE)
    net.wait_for(lambda: "exceeds the 1048576-byte limit" in p.envoy.log_text(), timeout=5,
                 message="a warning 'exceeds the 1048576-byte limit'")
    # Three rounds refused it, and every worker still routes over the three
    # nodes.
    net.wait_for(lambda: p.envoy.stat(S + "discovery_failures") >= failures + 3, timeout=10,
                 message="three rounds to refuse the answer")
    wait_routed(p, p.cluster.addresses)
    assert p.envoy.stat(S + "nodes_known") == 3


def test_thousands_of_addresses_are_capped_and_outsiders_dropped(make_cluster, proxied):
    cluster = make_cluster(n_nodes=3)
    prefix = cluster.addresses[0].rsplit(".", 2)[0]  # 127.A
    p = proxied(cluster=cluster, refresh_interval_ms=300, allowed_cidrs=[f"{prefix}.0.0/16"])
    p.wait_discovered()
    many = [f"{prefix}.{i // 250 + 1}.{i % 250 + 1}" for i in range(3000)] + ["192.0.2.1", "10.1.2.3"]
    p.cluster.set_localnodes_body(json.dumps(many).encode())
    net.wait_for(lambda: "node list changed, now 1024 nodes" in p.envoy.log_text(), timeout=5,
                 message="the list capped at 1024 nodes")
    # Make before break: nothing listens at the 1024 kept (bar the
    # cluster's own nodes, should they be among them), so every worker
    # keeps routing over the cluster's nodes, which stay known too.
    wait_routed(p, cluster.addresses)
    # The gauge is published on the next tick after the change is logged.
    known = net.wait_for(lambda: (n := p.envoy.stat(S + "nodes_known")) >= 1024 and n, timeout=5,
                         message="nodes_known to show the capped list")
    assert known <= 1024 + len(cluster.addresses), known
    log = p.envoy.log_text()
    assert "nodes beyond the limit of 1024" in log
    assert "192.0.2.1 is outside allowed_cidrs" in log and "10.1.2.3 is outside allowed_cidrs" in log
