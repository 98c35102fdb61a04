"""Node health that neither flaps nor lingers, through a real Envoy and boto3:
a few resets from a healthy node leave it in rotation, `down_after_resets`
in a row take it out until a probe passes, a node restarted under the
default configuration is back within seconds, and a node that /localnodes
lists again after dropping out waits only for a quarantine probe."""

from __future__ import annotations

import time

from harness import net
from harness.proxy import Load, create_table, host_stats, start_proxied, wait_discovered

#: The default `down_after_resets`.
RESETS_THRESHOLD = 3

#: Seconds a restarted node stays stopped, per cycle.
OUTAGES = (3.0, 3.0, 3.0, 3.3, 3.6)


def _victim_stat(p, victim_host: str, name: str) -> int:
    return host_stats(p.envoy).get(victim_host, {}).get(name, 0)


def test_resets_below_the_threshold_keep_a_healthy_node_in_rotation(make_cluster, make_envoy, dynamodb,
                                                                     table_name):
    # One worker: every reset and answer is seen by the same VM, the
    # strictest case for "in a row". Defaults otherwise.
    p = start_proxied(make_cluster, make_envoy, concurrency=1)
    wait_discovered(p, 3)
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


def test_resets_at_the_threshold_take_the_node_out_until_a_probe(make_cluster, make_envoy, dynamodb, table_name):
    p = start_proxied(make_cluster, make_envoy, concurrency=1)
    wait_discovered(p, 3)
    create_table(dynamodb(p.endpoint), table_name)
    victim = p.cluster.addresses[1]
    victim_host = f"{victim}:{p.cluster.port}"
    with Load(lambda: dynamodb(p.endpoint), table_name, threads=4) as load:
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


def test_a_restarted_node_gets_requests_within_five_seconds_by_default(make_cluster, make_envoy, dynamodb,
                                                                      table_name):
    """The default configuration (probes of a Down node after 1 s, then 2,
    4, ... up to 30 s): a node stopped for 3 s and started again gets its
    first request within 5 s of serving again. The backoff's worst case for
    such an outage is a probe just before the node is back and the next 4 s
    later: the last cycles stop the node a little longer than 3 s, so that
    the probe about 3 s after it went Down finds it still stopped. 5 s
    leaves a tick, a probe's round trip and a rebuild of slack."""
    p = start_proxied(make_cluster, make_envoy)
    wait_discovered(p, 3)
    create_table(dynamodb(p.endpoint), table_name)
    victim = p.cluster.addresses[1]
    victim_host = f"{victim}:{p.cluster.port}"
    waits = []
    with Load(lambda: dynamodb(p.endpoint), table_name, threads=4) as load:
        for cycle, outage in enumerate(OUTAGES):
            since = time.monotonic()
            net.wait_for(lambda: any(r.node == victim for r in p.cluster.dynamodb_requests(since=since)),
                         timeout=10, message=f"cycle {cycle}: the victim to be in rotation")
            marked = p.envoy.log_text().count(f"node {victim_host} marked Down")
            p.cluster.stop_node(victim)
            time.sleep(outage)
            # The outage was seen: a request found the node gone.
            assert p.envoy.log_text().count(f"node {victim_host} marked Down") == marked + 1
            p.cluster.start_node(victim)
            restarted = time.monotonic()
            first = net.wait_for(lambda: next((r for r in p.cluster.dynamodb_requests(since=restarted)
                                               if r.node == victim), None),
                                 timeout=35, message=f"cycle {cycle}: the restarted node to get a request")
            waits.append(first.timestamp - restarted)
    print("\nfirst request after a restart: " +
          ", ".join(f"{w:.2f}s (outage {o}s)" for o, w in zip(OUTAGES, waits)) +
          f"; {load.ok} SDK calls, {len(load.errors)} errors")
    assert load.errors == [], load.errors[:5]
    assert max(waits) < 5.0, waits
    assert p.envoy.log_text().count(f"node {victim_host} is back") == len(OUTAGES)


def test_a_node_listed_again_after_dropping_out_waits_only_for_a_quarantine_probe(make_cluster, make_envoy,
                                                                                  dynamodb, table_name):
    # Down nodes back off from 1 s to 30 s; quarantined ones are probed
    # every 300 ms.
    p = start_proxied(make_cluster, make_envoy, refresh_interval_ms=500, quarantine_probe_interval_ms=300)
    wait_discovered(p, 3)
    create_table(dynamodb(p.endpoint), table_name)
    victim = p.cluster.addresses[2]
    victim_host = f"{victim}:{p.cluster.port}"
    with Load(lambda: dynamodb(p.endpoint), table_name, threads=2) as load:
        p.cluster.stop_node(victim)
        stopped = time.monotonic()
        net.wait_for(lambda: f"node {victim_host} marked Down" in p.envoy.log_text(), timeout=5,
                     message="the stopped node to be marked Down")
        p.cluster.unlist_node(victim)
        net.wait_for(lambda: p.envoy.stat("wasmcustom.alternator_lb.nodes_known") == 2, timeout=5,
                     message="the node to drop out of the list")
        p.cluster.list_node(victim)
        net.wait_for(lambda: p.envoy.stat("wasmcustom.alternator_lb.nodes_quarantined") == 1, timeout=5,
                     message="the listed-again node to be quarantined")
        assert p.envoy.stat("wasmcustom.alternator_lb.nodes_down") == 0
        # Past the Down backoff's second probe (about 3 s after the stop): a
        # node still on that schedule would wait for the next one, 4 s on.
        time.sleep(max(0.0, stopped + 3.3 - time.monotonic()))
        p.cluster.start_node(victim)
        started = time.monotonic()
        first = net.wait_for(lambda: next((r for r in p.cluster.dynamodb_requests(since=started)
                                           if r.node == victim), None),
                             timeout=10, message="the node to get requests once its probe passes")
        wait = first.timestamp - started
    print(f"\nlisted again after dropping out: quarantined; first request {wait:.2f}s after it served again")
    assert load.errors == [], load.errors[:5]
    assert f"quarantined until a probe succeeds: [{victim_host}]" in p.envoy.log_text()
    assert f"node {victim_host} passed its probe" in p.envoy.log_text()
    # One quarantine period, a tick and a probe's round trip.
    assert wait <= 0.3 + 0.5, wait
