"""The refresh rhythm: fast while requests flow, slow when idle, back to fast
on the first request; failures back off and walk known nodes, then seeds."""

from __future__ import annotations

import time

from harness import net
from harness.proxy import create_table, start_proxied, wait_discovered


def calls_between(cluster, start: float, end: float) -> list:
    return [c for c in cluster.localnodes_calls(since=start) if c[0] < end]


def test_idle_slows_discovery_and_a_request_speeds_it_up(make_cluster, make_envoy, dynamodb, table_name):
    p = start_proxied(make_cluster, make_envoy, refresh_interval_ms=300, idle_refresh_interval_ms=2000,
                      idle_after_ms=1500)
    wait_discovered(p, 3)
    db = dynamodb(p.endpoint)
    create_table(db, table_name)
    # No requests for longer than idle_after_ms: one call per 2 s.
    time.sleep(2.5)
    start = time.monotonic()
    time.sleep(4.0)
    idle = calls_between(p.cluster, start, start + 4.0)
    assert 1 <= len(idle) <= 3, f"{len(idle)} calls in 4 s while idle: {idle}"
    # The first request makes a round due at once and restores the fast pace.
    woke = time.monotonic()
    db.get_item(TableName=table_name, Key={"pk": {"S": "k"}, "sk": {"S": "1"}})
    first = net.wait_for(lambda: calls_between(p.cluster, woke, woke + 10), timeout=1.5,
                         message="a /localnodes call right after the first request")
    print(f"first call {first[0][0] - woke:.2f} s after the first request")
    # At once, not at the idle pace (2 s); slack for a loaded machine.
    assert first[0][0] - woke < 1.0
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # keep the traffic flowing
        db.get_item(TableName=table_name, Key={"pk": {"S": "k"}, "sk": {"S": "1"}})
        time.sleep(0.05)
    busy = calls_between(p.cluster, woke, woke + 3.0)
    print(f"{len(busy)} calls in 3 s of traffic at a 300 ms interval")
    # About 9 at the fast pace, at most 2 at the idle one: half the fast pace
    # tells them apart and leaves a loaded machine (late ticks) its slack.
    assert len(busy) >= 4, f"only {len(busy)} calls in 3 s of traffic at a 300 ms interval"


def test_failures_back_off_and_walk_known_nodes_then_seeds(make_cluster, make_envoy):
    cluster = make_cluster(n_nodes=4)
    seed = cluster.addresses[3]
    cluster.remove_node(seed)  # serves /localnodes, but is not listed itself
    p = start_proxied(make_cluster, make_envoy, cluster=cluster, seeds=[seed], refresh_interval_ms=300)
    wait_discovered(p, 3)
    known = cluster.addresses[:3]
    for addr in known:
        cluster.set_localnodes_mode(addr, "error")
    start = time.monotonic()
    # Rounds fail on each known node in turn (1, 1, 2 intervals apart), then
    # go to the seed, which answers.
    net.wait_for(lambda: any(a == seed for _, a, _ in cluster.localnodes_calls(since=start)), timeout=8,
                 message="discovery to fall back to the seed")
    calls = cluster.localnodes_calls(since=start)
    targets = [a for _, a, _ in calls]
    first_seed = targets.index(seed)
    assert sorted(targets[:first_seed]) == sorted(known), f"each known node once, then the seed: {targets}"
    gaps = [round(b[0] - a[0], 2) for a, b in zip(calls, calls[1:first_seed + 1])]
    assert gaps[-1] >= 2 * 0.3 * 0.9, f"the interval grows after repeated failures: {gaps}"
    # The seed has been asked; its answer still has to reach the filter.
    net.wait_for(lambda: "discovery recovered after 3 failed attempts" in p.envoy.log_text(), timeout=5,
                 message="the recovery to be logged")
