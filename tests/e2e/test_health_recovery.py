"""Node health that neither flaps nor lingers, through a real Envoy and boto3:
what Envoy reports for a node that resets or closes a connection without
answering (its response flags) is what the filter counts as a reset, not as
a failed connect: a few in a row leave a healthy node in rotation,
`down_after_resets` in a row take it out until a probe passes.

How resets are counted, and how a node comes back (probe schedule, backoff,
quarantine), is proven in the core (stream/tests.rs
resets_take_a_node_out_only_three_in_a_row_by_default; poller/tests.rs
resets_below_the_threshold_leave_the_node_routed_on_every_vm,
a_node_down_for_three_seconds_is_back_everywhere_within_five).
Round robin is pinned: balancing is not the subject.
"""

from __future__ import annotations

import time

from harness import net
from harness.proxy import Load, create_table, host_stats

#: The default `down_after_resets`.
RESETS_THRESHOLD = 3
RR = {"load_balancing": "round_robin"}


def _victim_stat(p, victim_host: str, name: str) -> int:
    return host_stats(p.envoy).get(victim_host, {}).get(name, 0)


def test_resets_below_the_threshold_keep_a_healthy_node_in_rotation(proxied, dynamodb, table_name):
    # One worker: every reset and answer is seen by the same VM, the
    # strictest case for "in a row". Defaults otherwise.
    p = proxied(concurrency=1, **RR)
    p.wait_discovered()
    create_table(dynamodb(p.endpoint), table_name)
    victim = p.cluster.addresses[1]
    victim_host = f"{victim}:{p.cluster.port}"
    below = RESETS_THRESHOLD - 1
    rounds = ["reset", "close", "reset", "close", "reset"]
    with Load(lambda: dynamodb(p.endpoint), table_name, threads=4) as load:
        net.wait_for(lambda: _victim_stat(p, victim_host, "rq_success") > 0, timeout=10,
                     message="the victim to serve")
        before_5xx = p.envoy.stat("http.dynamodb.downstream_rq_5xx")
        for i, how in enumerate(rounds):
            answers_5xx = p.envoy.stat("http.dynamodb.downstream_rq_5xx")
            p.cluster.drop_next_requests(victim, below, how=how)
            net.wait_for(lambda: p.cluster.dropped_requests()[victim] == below * (i + 1), timeout=20,
                         message=f"round {i}: the node to drop {below} requests")
            # Envoy answered both with its 503, after the filter saw the
            # reset (the filter's response callback runs first) ...
            net.wait_for(lambda: p.envoy.stat("http.dynamodb.downstream_rq_5xx") >= answers_5xx + below,
                         timeout=10, message=f"round {i}: Envoy to answer the {below} dropped requests")
            # ... and then an answer from the node, which clears the count.
            answered = _victim_stat(p, victim_host, "rq_success")
            net.wait_for(lambda: _victim_stat(p, victim_host, "rq_success") > answered, timeout=10,
                         message=f"round {i}: the victim to answer after the resets")
        served_after = p.cluster.requests_per_node()[victim]
        net.wait_for(lambda: p.cluster.requests_per_node()[victim] > served_after + 5, timeout=10,
                     message="the victim to keep serving its share")
        proxy_503s = p.envoy.stat("http.dynamodb.downstream_rq_5xx") - before_5xx
    dropped = p.cluster.dropped_requests()[victim]
    print(f"\n{len(rounds)} rounds of {below} resets in a row ({dropped} in all): "
          f"{proxy_503s} proxy 503s, retried by the SDK; {load.ok} SDK calls, {len(load.errors)} errors; "
          f"marked Down {p.envoy.stat('wasmcustom.alternator_lb.nodes_marked_down')} times")
    assert dropped == below * len(rounds)
    assert load.errors == [], load.errors[:5]
    # Every dropped request reached the application as one 503 (which boto3
    # retried on another node), and nothing else failed.
    assert proxy_503s == dropped
    assert p.envoy.stat("wasmcustom.alternator_lb.nodes_marked_down") == 0
    assert "marked Down" not in p.envoy.log_text()


def test_resets_at_the_threshold_take_the_node_out_until_a_probe(proxied, dynamodb, table_name):
    p = proxied(concurrency=1, **RR)
    p.wait_discovered()
    create_table(dynamodb(p.endpoint), table_name)
    victim = p.cluster.addresses[1]
    victim_host = f"{victim}:{p.cluster.port}"
    # One client thread, so one request at a time: the node's next three
    # requests are reset one after the other, with no answer of its own to a
    # request sent earlier in between (which would start the count over and
    # leave the node in: with several threads, one of their requests may be
    # at the node, past the point where it drops, when the drops start).
    with Load(lambda: dynamodb(p.endpoint), table_name, threads=1) as load:
        net.wait_for(lambda: _victim_stat(p, victim_host, "rq_success") > 0, timeout=10,
                     message="the victim to serve")
        p.cluster.drop_next_requests(victim, RESETS_THRESHOLD, how="reset")
        net.wait_for(lambda: f"node {victim_host} marked Down" in p.envoy.log_text(), timeout=10,
                     message=f"{RESETS_THRESHOLD} resets in a row to mark the node Down")
        down = time.monotonic()
        # The node answers probes (GET /) all along: the first one, 1 s
        # after it went Down, brings it back.
        net.wait_for(lambda: f"node {victim_host} is back" in p.envoy.log_text(), timeout=5,
                     message="the probe 1 s after the node went Down to bring it back")
        back = time.monotonic() - down
        since = time.monotonic()
        net.wait_for(lambda: any(r.node == victim for r in p.cluster.dynamodb_requests(since=since)),
                     timeout=5, message="requests to reach the node again")
    print(f"\n{RESETS_THRESHOLD} resets in a row: marked Down, back {back:.2f}s later; "
          f"{load.ok} SDK calls, {len(load.errors)} errors")
    assert p.cluster.dropped_requests()[victim] == RESETS_THRESHOLD
    assert load.errors == [], load.errors[:5]
    log = p.envoy.log_text()
    assert log.count(f"node {victim_host} marked Down: its connections were reset before any response "
                     f"({RESETS_THRESHOLD} in a row)") == 1, log[-2000:]
    assert p.envoy.stat("wasmcustom.alternator_lb.nodes_marked_down") == 1
