"""Least-request balancing through a real Envoy (issue 14), with the
default configuration (no `load_balancing` key): under closed-loop SDK load
over three simulated nodes, a node that answers every DynamoDB request
150 ms late sheds its load, gets it back once it is fast again, and equal
nodes share equally.

The load is what this machine's Python SDK clients manage; the test
asserts shares and a throughput ratio measured within itself, never a rate.
"""

from __future__ import annotations

import time

from harness.proxy import Load, create_table

THREADS = 8
SLOW_S = 0.150


def shares(cluster, since: float, until: float | None = None) -> tuple[dict[str, float], int]:
    """Each node's share of the DynamoDB requests served in [since, until)."""
    served = [r.node for r in cluster.dynamodb_requests(since=since)
              if until is None or r.timestamp < until]
    total = len(served)
    return {a: served.count(a) / max(total, 1) for a in cluster.addresses}, total


def run_for(p, table_name, dynamodb, seconds: float, settle: float = 0.0):
    """Closed-loop load for `settle` + `seconds`; the rate and shares over
    the last `seconds`."""
    with Load(lambda: dynamodb(p.endpoint), table_name, threads=THREADS) as load:
        time.sleep(settle)
        ok0, t0 = load.ok, time.monotonic()
        time.sleep(seconds)
        ok1, t1 = load.ok, time.monotonic()
    assert load.errors == [], load.errors[:5]
    share, total = shares(p.cluster, t0, t1)
    return (ok1 - ok0) / (t1 - t0), share, total


def test_a_slow_node_sheds_load_and_gets_it_back(proxied, dynamodb, table_name):
    p = proxied()
    assert "load_balancing" not in p.filter_keys
    p.wait_discovered()
    create_table(dynamodb(p.endpoint), table_name)
    slow = p.cluster.addresses[1]

    fast_rate, fast_shares, _ = run_for(p, table_name, dynamodb, 5.0, settle=1.0)
    p.cluster.set_answer_delay(slow, SLOW_S)
    slow_rate, slow_shares, n = run_for(p, table_name, dynamodb, 8.0, settle=2.0)
    p.cluster.set_answer_delay(slow, 0.0)
    # Fast again: its share over the 5 s that end 10 s later.
    with Load(lambda: dynamodb(p.endpoint), table_name, threads=THREADS) as load:
        fast_again = time.monotonic()
        time.sleep(10.0)
    assert load.errors == [], load.errors[:5]
    back, m = shares(p.cluster, fast_again + 5.0, fast_again + 10.0)
    print(f"\nall fast: {fast_rate:.0f} req/s, shares {fmt(fast_shares)}; "
          f"one node {SLOW_S * 1000:.0f} ms slow: {slow_rate:.0f} req/s ({slow_rate / fast_rate:.2f}x), "
          f"its share {slow_shares[slow]:.1%} of {n}; 5-10 s after it is fast again: {back[slow]:.1%} of {m}")
    assert slow_shares[slow] <= 0.15, slow_shares
    assert slow_rate >= 0.6 * fast_rate, (slow_rate, fast_rate)
    assert back[slow] >= 0.20, back


def test_equal_nodes_get_equal_shares(proxied, dynamodb, table_name):
    p = proxied()
    p.wait_discovered()
    create_table(dynamodb(p.endpoint), table_name)
    rate, share, n = run_for(p, table_name, dynamodb, 10.0, settle=1.0)
    print(f"\n{rate:.0f} req/s over 3 equal nodes: shares {fmt(share)} of {n}")
    mean = 1 / 3
    for addr, s in share.items():
        assert abs(s - mean) <= 0.1 * mean, (addr, share)


def fmt(shares: dict[str, float]) -> str:
    return ", ".join(f"{s:.1%}" for s in shares.values())
